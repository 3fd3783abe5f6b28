"""`veil review`: a page in the browser to check what was protected, fix what was missed, and render.

- the decisions are saved as ``clip.veil-review.json`` (`veil.export.review`: the format, and
  how ``veil protect --review`` applies it);
- `analysis`: detect and track once (cached), frames and thumbnails for the page, a drawn box
  followed forward and backward;
- `server`: the local web server (bottle on the standard library's threaded WSGI server) with a
  token on every request, and the page itself (plain HTML, JS and CSS in ``static/``).

May import: the core, `veil.media`, `veil.export`, `veil.console` and (the analysis and the
render) `veil.pipeline`. Imported by the command line only.
"""
