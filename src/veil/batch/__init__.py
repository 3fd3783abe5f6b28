"""Many files: jobs planned from files and folders, run in this process, in worker processes or
on Ray, recorded in a manifest so an interrupted run resumes, long videos cut into segments.

- `plan`: inputs to jobs (folders recursively, layout mirrored, output names);
- `run`: `run_jobs`, the batch with its progress and report;
- `manifest`: the SQLite record of what is done (and ``veil status``);
- `workers`: a unit of work (`Task`) and the local back ends (inline, worker processes);
- `ray_runner`: the Ray back end;
- `segments`: a long video cut at keyframes, protected in parts, joined without re-encoding.

May import: `veil.pipeline`, `veil.media`, `veil.detect`, `veil.protect`, `veil.errors` and the
package's version. Only the command line (`veil.cli`) and benchmarks import it.
"""

from veil.batch.plan import Job, output_folder, plan_jobs
from veil.batch.run import Report, run_jobs

__all__ = ["Job", "Report", "output_folder", "plan_jobs", "run_jobs"]
