"""Object-store readers compared: streaming a gzip CSV from an S3 API on loopback.

    python benchmarks/bench_cloud.py [--rows 4000000] [--runs 3] [--libs importer,obstore,...]

Starts moto's S3 server in its own process on 127.0.0.1, uploads a gzip CSV made by
``gen_events.py`` (4M rows, level 6: about 100 MB), then for each library, in a fresh process
per run and alternating, streams the object to its end through Python's ``gzip`` (as
``inputs.open_stream`` does) and records wall time, compressed MB/s and the child's peak RSS.
``obstore`` is one streaming GET; ``importer`` is the importer's own ``open_stream`` over obstore
(ranged requests of 8 MiB, the next fetched while one is parsed).
It also records each library's import time in a fresh interpreter, the cost a run pays the
first time it touches an object store. A library that is not installed is reported as such.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BUCKET = "bench"
KEY = "exports/events.csv.gz"
IMPORTS = {
    "importer": "import obstore, obstore.store",
    "obstore": "import obstore, obstore.store",
    "pyarrow": "import pyarrow.fs",
    "s3fs": "import s3fs",
    "boto3 chain": "import obstore.auth.boto3",
}


def memory_mb(field: str) -> float:
    """VmRSS or VmHWM of this process (not ru_maxrss: that keeps the parent's peak across
    fork and exec)."""
    status = Path("/proc/self/status").read_text()
    return (
        int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith(f"{field}:"))) / 1024
    )


class ChunkStream(io.RawIOBase):
    """A file over an iterator of buffers (obstore's streaming GET)."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self.chunks = chunks
        self.buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.buf:
            nxt = next(self.chunks, None)
            if nxt is None:
                return 0
            self.buf = memoryview(nxt)
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


def child(lib: str, endpoint: str) -> None:
    """Stream the object through gzip; print seconds, bytes read and memory as JSON.

    The clock and the memory baseline start once the library is imported: import time is
    measured on its own.
    """
    if lib == "importer":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from flywheel_import.inputs import expand, open_stream
    elif lib == "obstore":
        import obstore
        from obstore.store import from_url
    elif lib == "pyarrow":
        import pyarrow.fs as pafs
    else:
        import s3fs
    base = memory_mb("VmRSS")
    started = time.perf_counter()
    stream: Any
    if lib == "importer":  # what a run does: ranged 8 MiB reads, one ahead
        (src,) = expand([f"s3://{BUCKET}/{KEY}"])
        stream = open_stream(src)
    elif lib == "obstore":
        store = from_url(f"s3://{BUCKET}", client_options={"allow_http": True})
        chunks = iter(obstore.get(store, KEY).stream(min_chunk_size=1 << 20))
        stream = gzip.GzipFile(fileobj=io.BufferedReader(ChunkStream(chunks), 1 << 20))
    elif lib == "pyarrow":
        fs = pafs.S3FileSystem(endpoint_override=endpoint)
        stream = gzip.GzipFile(
            fileobj=fs.open_input_stream(f"{BUCKET}/{KEY}", compression=None, buffer_size=4 << 20)
        )
    else:
        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        stream = gzip.GzipFile(fileobj=fs.open(f"{BUCKET}/{KEY}", "rb", block_size=4 << 20))
    total = 0
    with stream:
        while chunk := stream.read(4 << 20):
            total += len(chunk)
    seconds = time.perf_counter() - started
    peak = memory_mb("VmHWM")
    print(
        json.dumps(
            {"seconds": seconds, "csv_bytes": total, "rss_mb": peak, "growth_mb": peak - base}
        )
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def import_seconds(lib: str) -> float | None:
    code = f"import time; t = time.perf_counter(); {IMPORTS[lib]}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(out.stdout) if out.returncode == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--libs", default="importer,obstore,pyarrow,s3fs")
    ap.add_argument("--child", nargs=2, metavar=("LIB", "ENDPOINT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from gen_events import frame

    libs = [lib for lib in args.libs.split(",") if import_seconds(lib) is not None]
    profiles = [t for t in (import_seconds("boto3 chain") for _ in range(3)) if t is not None]
    missing = set(args.libs.split(",")) - set(libs)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "events.csv.gz"
            with gzip.open(data, "wb", compresslevel=6) as f:
                frame(args.rows).write_csv(f)
            size = data.stat().st_size
            import boto3

            os.environ.update(env)
            for _ in range(100):
                try:
                    s3 = boto3.client("s3", endpoint_url=endpoint)
                    s3.create_bucket(Bucket=BUCKET)
                    break
                except Exception:
                    time.sleep(0.1)
            s3.upload_file(str(data), BUCKET, KEY)
        print(
            f"object: {size / 1e6:.0f} MB gzip, {args.rows:,} rows; missing: "
            f"{', '.join(sorted(missing)) or 'none'}"
        )
        results: dict[str, list[dict[str, float]]] = {lib: [] for lib in libs}
        for _ in range(args.runs):
            for lib in libs:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", lib, endpoint],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if out.returncode:
                    sys.exit(f"{lib}: {out.stderr.strip().splitlines()[-1]}")
                results[lib].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for lib in libs:
            runs = results[lib]
            secs = statistics.median(r["seconds"] for r in runs)
            rss = statistics.median(r["rss_mb"] for r in runs)
            growth = statistics.median(r["growth_mb"] for r in runs)
            imports = statistics.median(
                t for t in (import_seconds(lib) for _ in range(3)) if t is not None
            )
            spread = ", ".join(f"{r['seconds']:.2f}" for r in runs)
            print(
                f"{lib:8} stream+gunzip {secs:6.2f} s = {size / 1e6 / secs:6.1f} MB/s "
                f"compressed ({runs[0]['csv_bytes'] / 1e6 / secs:6.1f} MB/s CSV); "
                f"peak RSS {rss:4.0f} MB (+{growth:3.0f} MB while reading); "
                f"import {imports * 1000:4.0f} ms "
                f"[runs: {spread} s]"
            )
        if profiles:
            print(
                f"import obstore.auth.boto3 (only when keys come from ~/.aws or roles "
                f"through boto3): {statistics.median(profiles) * 1000:.0f} ms"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
