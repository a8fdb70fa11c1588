#!/usr/bin/env python3
"""Turns the stage results of scripts/gpu_check.sh (status.jsonl, probe.txt) into gpu_check.json
and gpu_check.md, prints a short table, and exits non-zero when a check failed."""
import argparse
import json
import os
import re
import sys

GIB = 1 << 30
AVSS_BUDGET = 22 * GIB  # a 24 GiB card less its CUDA context


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--status", required=True)
    ap.add_argument("--probe", required=True)
    ap.add_argument("--mode", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    rows = [json.loads(l) for l in open(a.status) if l.strip()]
    probe = open(a.probe).read() if os.path.exists(a.probe) else ""

    def find(pattern, default=""):
        m = re.search(pattern, probe, re.M)
        return m.group(1).strip() if m else default

    rep = {
        "mode": a.mode,
        "date": find(r"^== date: (.*)$"),
        "device": find(r"^device (.*?) \d+ cc", "cpu") if a.mode == "gpu" else "cpu",
        "torch_version": find(r"^torch (\S+)"),
        "cuda_version": find(r"^torch \S+ cuda (\S+)"),
        "compiler": find(r"^== compilers\n(.*)$"),
        "tests_passed": 0, "tests_failed": 0, "tests_skipped": 0,
        "failed_tests": [], "skipped_tests": [],
        "train": [], "bench": [], "skipped": {}, "stages": {},
    }
    if a.mode == "gpu" and not rep["device"]:
        rep["device"] = find(r"^NVIDIA[^,]*|^name.*\n([^,]+)", "")
    for r in rows:
        st, k, v = r["stage"], r["key"], r["value"]
        if k == "skipped":
            rep["skipped"][st] = v
        elif st == "test" and k in ("tests_passed", "tests_failed", "tests_skipped"):
            rep[k] = v
        elif st == "test" and k == "failed_names":
            rep["failed_tests"] = v
        elif st == "test" and k == "skipped_names":
            rep["skipped_tests"] = v
        elif st == "train" and k == "run":
            rep["train"].append(v)
        elif st == "bench":
            v = dict(v) if isinstance(v, dict) else {"value": v}
            v["label"] = k
            rep["bench"].append(v)
        elif st == "tensorboard":
            rep["tensorboard"] = v
        elif st == "eval" and k == "metrics":
            rep["eval_metrics"] = v
        else:
            rep["stages"].setdefault(st, {})[k] = v

    checks = []

    def check(name, ok, detail=""):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    if "build" in rep["stages"]:
        b = rep["stages"]["build"]
        check("build", b.get("ok"), "%s s, %s warning(s)" % (b.get("seconds", "?"), b.get("warnings", "?")))
        if "media_free" not in rep["skipped"]:
            check("no media library in NEEDED", b.get("media_free"), "")
    if any(r["stage"] == "test" for r in rows):
        # On a GPU something must have run; on the CPU the cuda tests all skip (reasons printed).
        ran = rep["tests_passed"] > 0 or (a.mode == "cpu" and rep["tests_skipped"] > 0)
        check("cuda and parity tests", rep["tests_failed"] == 0 and ran,
              "%d passed, %d failed, %d skipped" % (rep["tests_passed"], rep["tests_failed"], rep["tests_skipped"]))
    for t in rep["train"]:
        ok = t.get("ok") and t.get("loss_last") is not None and t["loss_last"] < t["loss_first"]
        check("train %s: loss falls" % t["name"], ok,
              "%s -> %s" % (fmt(t.get("loss_first")), fmt(t.get("loss_last"))))
    if "tensorboard" in rep:
        check("TensorBoard events read back", rep["tensorboard"].get("ok"), json.dumps(rep["tensorboard"]))
    if "eval" in rep["stages"]:
        check("evaluation", rep["stages"]["eval"].get("ok"), json.dumps(rep.get("eval_metrics", {})))
    for b in rep["bench"]:
        if b.get("ok") is False:
            check("bench %s" % b["label"], False, "failed")
            continue
        if b["label"] == "avss_pvt_b5_fp16" and a.mode == "gpu":
            tr = [f for f in b.get("figures", []) if f.get("name", "").startswith("train")]
            peak = max([f.get("peak_gpu_reserved_bytes", 0) for f in tr] or [0])
            check("AVSS PVT-v2-b5 fp16 step, 8x10 frames, peak reserved <= 22 GiB", 0 < peak <= AVSS_BUDGET,
                  "%.2f GiB" % (peak / GIB))
    rep["checks"] = checks
    rep["ok"] = all(c["ok"] for c in checks)

    with open(os.path.join(a.out, "gpu_check.json"), "w") as f:
        json.dump(rep, f, indent=2)
        f.write("\n")
    md = markdown(rep)
    with open(os.path.join(a.out, "gpu_check.md"), "w") as f:
        f.write(md)
    print(short_table(rep))
    return 0 if rep["ok"] else 1


def fmt(x, nd=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        return ("%." + str(nd) + "f") % x
    return str(x)


def gib(x):
    return "-" if not x else "%.2f GiB" % (x / GIB)


def bench_rows(rep):
    out = []
    for b in rep["bench"]:
        for f in b.get("figures", []):
            out.append((b["label"], f.get("name", ""), f.get("median"), f.get("unit", ""),
                        f.get("peak_gpu_allocated_bytes"), f.get("peak_gpu_reserved_bytes"),
                        f.get("peak_rss_bytes")))
    return out


def markdown(rep):
    L = ["# gpu_check report (%s)" % rep["mode"], "",
         "- device: %s" % rep["device"],
         "- torch: %s, CUDA %s" % (rep["torch_version"] or "Debian's LibTorch", rep["cuda_version"] or "-"),
         "- date: %s" % rep["date"],
         "- tests (labels cuda, parity): %d passed, %d failed, %d skipped" % (
             rep["tests_passed"], rep["tests_failed"], rep["tests_skipped"]), ""]
    if rep["failed_tests"]:
        L += ["Failed tests: " + ", ".join(rep["failed_tests"]), ""]
    L += ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
    for c in rep["checks"]:
        L.append("| %s | %s | %s |" % (c["check"], "ok" if c["ok"] else "FAILED", c["detail"]))
    L += ["", "## Training (in-memory synthetic S4)", "",
          "| run | model | precision | batch x frames | iterations | loss first 10 | loss last 10 | it/s | peak allocated | peak reserved |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for t in rep["train"]:
        L.append("| %s | %s | %s | %s x %s | %s | %s | %s | %s | %s | %s |" % (
            t["name"], t.get("model"), t["precision"], t.get("batch"), t.get("frames_per_video"),
            t["iterations"], fmt(t.get("loss_first")), fmt(t.get("loss_last")), fmt(t.get("it_per_s"), 2),
            gib(t.get("peak_gpu_mem_bytes")), gib(t.get("peak_gpu_reserved_bytes"))))
    L += ["", "## combo-bench", "",
          "| record | figure | median | unit | peak GPU allocated | peak GPU reserved | peak RSS |",
          "|---|---|---|---|---|---|---|"]
    for r in bench_rows(rep):
        L.append("| %s | %s | %s | %s | %s | %s | %s |" % (r[0], r[1], fmt(r[2], 4), r[3], gib(r[4]), gib(r[5]), gib(r[6])))
    if rep["skipped"]:
        L += ["", "## Skipped", ""]
        for k, v in rep["skipped"].items():
            L.append("- %s: %s" % (k, v))
    return "\n".join(L) + "\n"


def short_table(rep):
    L = ["", "%-58s %s" % ("check", "result")]
    for c in rep["checks"]:
        L.append("%-58s %s  %s" % (c["check"][:58], "ok" if c["ok"] else "FAILED", c["detail"][:80]))
    for k, v in rep["skipped"].items():
        L.append("%-58s skipped  %s" % (k[:58], v[:80]))
    L.append("overall: %s" % ("ok" if rep["ok"] else "FAILED"))
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
