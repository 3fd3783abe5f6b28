"""Media I/O: videos and photos in and out, and the files they are written to.

- `read`: streaming video decode with PyAV (upright frames, timestamps, colour description);
- `write`: video encode (VFR timestamps, colour kept, audio copied, metadata dropped);
- `photo`: photos read upright and written as the same kind of file, metadata dropped;
- `metadata`: what of a source's metadata (place, device, dates, telemetry streams) the output lacks;
- `outputs`: the output checks and the temporary file that is renamed only when complete;
- `background`: decode ahead and encode behind on threads, for the frame loop;
- `sources` and `sinks`: what can be read (files, pipes, stream URLs, cameras) and written live
  (stream URLs, HLS, stdout); `damage`: decoding past damaged packets; `audio`: audio packets
  carried through (copied, or re-encoded where a sink needs it); `preview`: the MJPEG viewer;
  `files`: which files are videos and photos.

May import: `veil.errors`. Nothing of the core (faces, detection, protections, the learned
systems) imports this package: they work on arrays; `veil.pipeline`, `veil.batch`, `veil.keep`,
the systems' data loaders and the commands bring the files to them.
"""
