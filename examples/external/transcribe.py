#!/usr/bin/env python3
"""An errand external command in Python: "transcribe" an audio file.

The protocol (docs/cli.md#external-commands):
  - the job's input JSON arrives on stdin;
  - the result JSON goes to stdout;
  - stderr lines like {"progress": 0.5, "message": "..."} or {"log": "..."}
    become progress and log events; other stderr lines become log events;
  - exit 0 = success, 75 = try again later, anything else = give up.
Cancel and timeout send SIGTERM (then SIGKILL after kill_grace_secs).
"""

import json
import os
import signal
import sys
import time

EX_TEMPFAIL = 75


def progress(fraction, message):
    print(json.dumps({"progress": fraction, "message": message}), file=sys.stderr, flush=True)


def log(line):
    print(json.dumps({"log": line}), file=sys.stderr, flush=True)


def stop(signum, frame):
    log("stopping: canceled or out of time")
    sys.exit(128 + signum)


def main():
    signal.signal(signal.SIGTERM, stop)
    job = json.load(sys.stdin)
    path = job.get("path")
    if not path:
        print("input needs a 'path'", file=sys.stderr)
        return 2  # permanent: retrying will not add the field
    if job.get("simulate_outage") and os.environ.get("ERRAND_ATTEMPT") == "1":
        print("the speech service is unavailable; try again", file=sys.stderr)
        return EX_TEMPFAIL
    chunks = int(job.get("chunks", 5))
    log(f"transcribing {path} in {chunks} chunks (job {os.environ.get('ERRAND_JOB_ID')})")
    words = []
    for i in range(1, chunks + 1):
        time.sleep(float(job.get("secs_per_chunk", 0.2)))
        words.append(f"chunk{i}")
        progress(i / chunks, f"chunk {i} of {chunks}")
    json.dump({"path": path, "language": job.get("language", "en"), "text": " ".join(words)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
