"""One measurement of one engine: runs its public command line, returns figures and the peak RSS.

moed: `moed bench --json` (sparse execution's medians: prefill and decode tok/s, time to first
token) and `moed generate` (load to first token). llama.cpp: `llama-bench -o json` (pp at depth 0,
tg after a context of the prompt's length) and a one-token `llama-bench` run (load to first token).
Peak RSS is the child's own `ru_maxrss` from wait4(), so no /usr/bin/time is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass


class MeasureError(RuntimeError):
    pass


@dataclass
class Proc:
    stdout: str
    wall_s: float
    max_rss_bytes: int


def run_rss(cmd: list[str], env: dict | None = None, timeout: float = 3600.0) -> Proc:
    """Runs `cmd` to completion; its peak RSS comes from wait4() (output goes through temporary files)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.monotonic()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                os.wait4(p.pid, 0)
                raise MeasureError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}")
            time.sleep(0.02)
        wall = time.monotonic() - start
        p.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if p.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise MeasureError(f"exit {p.returncode}: {' '.join(cmd)}\n{tail}")
    return Proc(stdout, wall, usage.ru_maxrss * 1024)


def _json_after_noise(text: str, opener: str):
    """The JSON document in `text` (tools may print log lines before it)."""
    i = text.find(opener)
    if i < 0:
        raise MeasureError(f"no JSON in output: {text[-500:]!r}")
    return json.loads(text[i:])


@dataclass
class Params:
    threads: int
    prompt: int
    decode: int
    repeat: int
    moed_args: tuple[str, ...] = ()  # extra engine flags, e.g. --ort-spinning
    llama_args: tuple[str, ...] = ()  # extra llama-bench flags, e.g. --poll 0


def moed_bench(moed: str, pkg: str, p: Params) -> dict:
    cmd = [moed, "bench", "--model", pkg, "--threads", str(p.threads), "--prompt-tokens", str(p.prompt),
           "--decode-tokens", str(p.decode), "--repeat", str(p.repeat), "--bandwidth-mib", "16", "--json",
           *p.moed_args]
    r = run_rss(cmd)
    report = _json_after_noise(r.stdout, "{")
    try:
        s = report["sparse"]
        return {"decode_tok_s": float(s["decode_tok_s"]), "prefill_tok_s": float(s["prefill_tok_s"]),
                "ttft_ms": float(s["ttft_ms"]), "peak_rss_bytes": r.max_rss_bytes, "wall_s": r.wall_s,
                "bytes_per_token": s.get("bytes_per_token"), "command": cmd}
    except (KeyError, TypeError, ValueError) as err:
        raise MeasureError(f"moed bench --json: unexpected report ({err!r}): {r.stdout[:400]}") from None


def moed_load(moed: str, pkg: str, p: Params) -> dict:
    cmd = [moed, "generate", "--model", pkg, "--raw", "--max-tokens", "1", "--ignore-eos", "--temperature", "0",
           "--seed", "0", "--threads", str(p.threads), "--json", *p.moed_args, "a"]
    r = run_rss(cmd)
    return {"load_to_first_token_s": r.wall_s, "peak_rss_bytes": r.max_rss_bytes, "command": cmd}


def _llama_test(rows: list, n_prompt: int, n_gen: int, depth: int) -> dict:
    for row in rows:
        if row.get("n_prompt") == n_prompt and row.get("n_gen") == n_gen and row.get("n_depth", 0) == depth:
            return row
    raise MeasureError(f"llama-bench: no result for pp{n_prompt} tg{n_gen} d{depth}")


def llama_bench(bin_dir: str, gguf: str, p: Params) -> dict:
    cmd = [os.path.join(bin_dir, "llama-bench"), "-m", gguf, "-t", str(p.threads), "-p", str(p.prompt),
           "-n", str(p.decode), "-d", f"0,{p.prompt}", "-r", str(p.repeat), "-o", "json", *p.llama_args]
    r = run_rss(cmd)
    rows = _json_after_noise(r.stdout, "[")
    pp = _llama_test(rows, p.prompt, 0, 0)
    tg = _llama_test(rows, 0, p.decode, p.prompt)
    tg0 = _llama_test(rows, 0, p.decode, 0)
    prefill = float(pp["avg_ts"])
    return {"decode_tok_s": float(tg["avg_ts"]), "prefill_tok_s": prefill, "ttft_ms": p.prompt / prefill * 1e3,
            "decode_tok_s_depth0": float(tg0["avg_ts"]), "peak_rss_bytes": r.max_rss_bytes, "wall_s": r.wall_s,
            "build": {k: rows[0].get(k) for k in ("build_commit", "build_number", "cpu_info", "repack", "flash_attn")},
            "tests": [{k: row.get(k) for k in ("n_prompt", "n_gen", "n_depth", "avg_ts", "stddev_ts", "samples_ts")}
                      for row in rows],
            "command": cmd}


def llama_load(bin_dir: str, gguf: str, p: Params) -> dict:
    cmd = [os.path.join(bin_dir, "llama-bench"), "-m", gguf, "-t", str(p.threads), "-p", "0", "-n", "1",
           "-r", "1", "--no-warmup", "-o", "json", *p.llama_args]
    r = run_rss(cmd)
    return {"load_to_first_token_s": r.wall_s, "peak_rss_bytes": r.max_rss_bytes, "command": cmd}
