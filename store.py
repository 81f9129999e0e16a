"""The run store: a run directory, its lock, its CSV logs, its checkpoints and its config.json.

A run directory holds config.json (settings, provenance, status), episodes.csv (one whole row per
episode), timing.csv, layers.csv and eval.csv where they apply, agent.npz when the run finished,
and checkpoint.npz / checkpoint.prev.npz between episodes (arrays and JSON only: nothing read back
can execute code).  Every file is written atomically or appended in whole rows; one process at
a time holds a directory (RunLock).  run.py drives a run through these functions; sweep.py reads
the same files to know which runs are done.
"""
import csv
import hashlib
import io
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys

import numpy as np

import metatrace as mt


class UsageError(Exception):
    """Bad input from the command line: reported as one line, exit status 2."""


def settings_hash(s):
    """A short hash of every setting: the identity of a run."""
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:10]


class CheckpointError(ValueError):
    """A checkpoint that is not a complete, matching state of this run: refused whole."""


def check_arrays(live, arrays):
    """Every array of `live` is in `arrays` with the same dtype and shape, and nothing else is
    (metatrace.check_arrays, as a CheckpointError)."""
    try:
        mt.check_arrays(live, arrays)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def check_learner(learner, arrays):
    """A learner's saved arrays (named learner_<k>, between episodes): every array, finite,
    in range (metatrace's Learner.check), as a CheckpointError."""
    try:
        learner.check({k[len("learner_"):]: v for k, v in arrays.items()
                       if k.startswith("learner_")}, between_episodes=True)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def check_rng(state, like):
    """A bit generator state (as JSON) that `like`'s kind of generator accepts; returns it."""
    probe = type(like.bit_generator)()
    try:
        if not (isinstance(state, dict) and state.get("bit_generator") ==
                like.bit_generator.state["bit_generator"]):
            raise ValueError("another kind of generator")
        probe.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise CheckpointError(f"a random generator state is malformed ({e})") from None
    return probe.state


def cpu_model():
    """The CPU's model name (Linux), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def provenance():
    """Command line, package versions, the git commit, the CPU, the thread counts and, in a Ray
    worker, the Ray node's id."""
    import gymnasium
    import numba
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        r = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=here, capture_output=True,
                           text=True, timeout=10)
        commit = r.stdout.strip() if r.returncode == 0 else None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=here, capture_output=True, text=True, timeout=10).stdout)
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    try:
        from threadpoolctl import threadpool_info
        blas = [{"library": i.get("internal_api"), "threads": i.get("num_threads")}
                for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        blas = None
    ray_node = None
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        ray_node = sys.modules["ray"].get_runtime_context().get_node_id()
    return {"command": [os.path.basename(sys.argv[0]) or "run.py", *sys.argv[1:]],
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "gymnasium": gymnasium.__version__,
            "git_commit": commit, "git_dirty": dirty, "host": platform.node(),
            "cpu": cpu_model(), "blas": blas, "numba_threads": numba.get_num_threads(),
            "ray_node": ray_node}


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_json(path, obj):
    """Atomic JSON write (temp file + rename); a failed write leaves no temp file."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


CKPT, CKPT_PREV, CKPT_TMP = "checkpoint.npz", "checkpoint.prev.npz", "checkpoint.tmp.npz"


CKPT_FORMAT, CKPT_VERSION = "metatrace-checkpoint", 2


def save_checkpoint(out, runner, s, episodes_done):
    """Atomic checkpoint between episodes (temp + rename); the previous one is kept as a fallback.
    Arrays and JSON only (np.savez of numeric arrays; read back with allow_pickle=False)."""
    arrays, state = runner.get_state()
    meta = json.dumps({"format": CKPT_FORMAT, "version": CKPT_VERSION,
                       "settings_hash": settings_hash(s), "seed": s["seed"],
                       "episodes_done": episodes_done, "state": state})
    tmp = os.path.join(out, CKPT_TMP)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(meta), **arrays)
            f.flush()
            os.fsync(f.fileno())
        cur, prev_tmp = os.path.join(out, CKPT), os.path.join(out, "checkpoint.prev.tmp")
        if os.path.exists(cur):               # keep it as the fallback; CKPT never goes missing
            _remove(prev_tmp)
            try:
                os.link(cur, prev_tmp)
            except OSError:                   # a file system without hard links
                shutil.copyfile(cur, prev_tmp)
            os.replace(prev_tmp, os.path.join(out, CKPT_PREV))
        os.replace(tmp, cur)
    except BaseException:
        _remove(tmp)
        _remove(os.path.join(out, "checkpoint.prev.tmp"))
        raise


def read_checkpoint(path, runner, s):
    """Read and validate one checkpoint completely -> (episodes_done, apply); the agent is not
    touched (apply() restores it).  CheckpointError says why a file is refused."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise CheckpointError("not an .npz archive")
            arrays = {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except Exception as e:   # not a zip, a CRC error, a pickled object array, a truncated file
        raise CheckpointError(f"unreadable ({type(e).__name__}: {str(e)[:80]})") from None
    m = arrays.pop("meta", None)
    if m is None or m.dtype.kind != "U" or m.shape != ():
        raise CheckpointError("no metadata")
    try:
        meta = json.loads(str(m[()]))
    except ValueError:
        raise CheckpointError("metadata is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != CKPT_FORMAT:
        raise CheckpointError("not a metatrace checkpoint")
    if meta.get("version") != CKPT_VERSION:
        raise CheckpointError(f"format version {meta.get('version')!r}, this code reads "
                              f"{CKPT_VERSION}")
    if meta.get("seed") != s["seed"]:
        raise CheckpointError(f"it belongs to seed {meta.get('seed')!r}, this run has {s['seed']}")
    if meta.get("settings_hash") != settings_hash(s):
        raise CheckpointError("it belongs to a run with other settings")
    done = meta.get("episodes_done")
    if type(done) is not int or done < 1 or set(meta) != {
            "format", "version", "settings_hash", "seed", "episodes_done", "state"}:
        raise CheckpointError("malformed metadata")
    return done, runner.prepare_state(arrays, meta["state"])


def load_checkpoint(out, runner, s, rows):
    """Restore the newest valid checkpoint into runner -> episodes done (0 when there is none).

    A refused checkpoint is reported on stderr and the previous one tried; if checkpoints exist
    but none is usable, CheckpointError, with the run directory and the agent left untouched."""
    why = []
    for name in (CKPT, CKPT_PREV):
        path = os.path.join(out, name)
        if not os.path.exists(path):
            continue
        try:
            done, apply = read_checkpoint(path, runner, s)
            if done > rows:
                raise CheckpointError(f"it is at episode {done} but episodes.csv has {rows} rows")
        except CheckpointError as e:
            why.append(f"{name}: {e}")
            print(f"run.py: checkpoint {path} is unreadable or invalid ({e}); falling back to "
                  "the previous one", file=sys.stderr)
            continue
        apply()
        return done
    if why:
        raise CheckpointError(f"no usable checkpoint in {out} ({'; '.join(why)}); nothing was "
                              "changed; remove the checkpoint files to start the run over")
    return 0


def read_rows(path, n):
    """The first n data rows of a CSV (all if fewer) as dicts; a partial last line is dropped."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        text = f.read()
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    return list(csv.DictReader(io.StringIO(text)))[:n]


def rows_until(path, done):
    """The rows of a log written at episode ends (eval.csv, layers.csv) up to episode `done`."""
    return [r for r in read_rows(path, 10**12) if int(r["episode"]) <= done]


class RowWriter:
    """Appends whole CSV rows: each row is one write of its bytes, and a write that fails (a full
    disk) is cut back to the last whole row before the error goes on.  buffered: rows wait in
    memory until flush() (a log that only needs to be complete at checkpoints)."""

    def __init__(self, path, fields, buffered=False):
        self.fields, self.buffered, self.pending = fields, buffered, []
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.size = os.fstat(self.fd).st_size
        self.buf = io.StringIO()
        self.csv = csv.writer(self.buf, lineterminator="\n")

    def write(self, row):
        """Append one row (a dict with exactly the writer's fields)."""
        if len(row) != len(self.fields):
            raise ValueError(f"row has fields {sorted(row)}, expected {self.fields}")
        self.buf.seek(0)
        self.buf.truncate()
        self.csv.writerow([row[f] for f in self.fields])
        if self.buffered:
            self.pending.append(self.buf.getvalue())
        else:
            self._append(self.buf.getvalue().encode())

    def flush(self):
        """Write the buffered rows, in one write."""
        if self.pending:
            data, self.pending = "".join(self.pending).encode(), []
            self._append(data)

    def _append(self, data):
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            os.ftruncate(self.fd, self.size)
            raise
        self.size += len(data)

    def close(self):
        try:
            self.flush()
        finally:
            os.close(self.fd)


class Interrupt:
    """SIGINT/SIGTERM set a flag; the run checkpoints after the current episode and stops."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, sig, frame):
        self.signal = sig

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class RunLock:
    """An exclusive lock on a run directory (OUT/.lock) for the life of the process that writes
    it; a second process fails at once."""

    def __init__(self, out, what="run"):
        self.path, self.what, self.fd = os.path.join(out, ".lock"), what, None

    def __enter__(self):
        import fcntl
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UsageError(f"{os.path.dirname(self.path)} is in use by another {self.what} "
                             "(one writer per directory)") from None
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def out_flag(text, default):
    """The directory --out names: `default` when the flag is absent; UsageError when it is given
    empty or blank (it would silently mean the current or the default directory)."""
    if text is None:
        return default
    if not text.strip():
        raise UsageError(f"--out {text!r} is empty; give a directory, or leave --out out for "
                         f"the default ({default})")
    return text


def read_config(out):
    """OUT/config.json as a dict with its settings and status; UsageError if unreadable."""
    path = os.path.join(out, "config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
        if not (isinstance(cfg, dict) and isinstance(cfg.get("settings"), dict)
                and isinstance(cfg.get("status"), str)):
            raise ValueError("no settings or status")
    except (OSError, ValueError, RecursionError) as e:
        raise UsageError(f"{path} is unreadable ({type(e).__name__}); it is not a run this "
                         "code can continue") from None
    return cfg


def check_whole(out, cfg):
    """A finished or diverged run's episodes.csv must hold every episode its config.json counts,
    the last one at its agent steps; UsageError (naming the run) if it was cut short."""
    done = cfg.get("episodes_done")
    rows = read_rows(os.path.join(out, "episodes.csv"), 10**12)
    steps = cfg.get("agent_steps")
    if (type(done) is not int or len(rows) != done
            or (done and str(rows[-1].get("steps")) != str(steps))):
        raise UsageError(f"{out} is marked {cfg['status']} after {done!r} episodes, but its "
                         f"episodes.csv holds {len(rows)}; it was cut short or altered: remove "
                         "the run directory to run it again")


def differing(old, new):
    """The first setting whose stored value differs from the requested one, or None."""
    for k in sorted(set(old) | set(new)):
        if old.get(k, "(absent)") != new.get(k, "(absent)"):
            return k
    return None


def check_out(out, s, resume):
    """Whether `out` can take this run, without writing anything -> the finished run's config
    (a finished or diverged run is kept as it is), or None; UsageError otherwise."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file, not a directory")
    if not os.path.isdir(out):
        parent = os.path.dirname(os.path.abspath(out))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out} cannot be created: {parent} is not a writable directory")
        return None
    entries = set(os.listdir(out)) - {".lock"}
    if "config.json" not in entries:
        if entries:
            raise UsageError(f"--out {out} holds files that are not a run (e.g. {sorted(entries)[0]})"
                             "; choose an empty or new directory")
        return None
    cfg = read_config(out)
    if not resume:
        raise UsageError(f"{out} already holds a run; pass --resume to continue it, "
                         "or choose another --out")
    k = differing(cfg["settings"], s)
    if k is not None:
        raise UsageError(f"--resume: {k} is {s.get(k, '(absent)')!r} but the run in {out} has "
                         f"{cfg['settings'].get(k, '(absent)')!r}")
    if cfg["status"] not in ("finished", "diverged"):
        return None
    check_whole(out, cfg)
    return cfg


def finite_stats(stats, last):
    """(statistics, all finite): a non-finite value is replaced by its last finite value."""
    ok = all(math.isfinite(v) for v in stats.values())
    return ({k: v if math.isfinite(v) else last[k] for k, v in stats.items()}, ok)


def restart_csv(path, fields, rows, buffered=False):
    """Write `path` afresh with its header and `rows` (atomically) -> a RowWriter appending to it."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return RowWriter(path, fields, buffered)


def save_agent(runner, out, run):
    """OUT/agent.npz: the trained agent, with `run`, the record of the run that made it
    (its settings hash and seed), atomically."""
    path, tmp = os.path.join(out, AGENT_FILE), os.path.join(out, "agent.tmp.npz")
    try:
        runner.save_agent(tmp, run)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


AGENT_FILE, TIMING_FIELDS = "agent.npz", ["episode", "seconds", "elapsed_seconds"]


EVAL_FIELDS = ["episode", "steps", "eval_mean", "eval_se", "eval_episodes", "greedy"]
