"""Sweeps: every combination of the grids of `python run.py sweep`, run on a process pool or on Ray.

`main_sweep` expands the grids (`expand`), checks the sweep directory against its manifest
(sweep.json), and hands one task per run to an engine: `_pool_engine` (a process pool of
--workers) or `_ray_engine` (a private local Ray instance, or a cluster).  Each task is one
`run.run` in its own run directory, so a sweep resumes wherever it was stopped and a finished
run is never run twice.
"""
# run first: it sets the BLAS thread variables before numpy is imported (a Ray worker imports
# this module on its own)
from run import run, run_options, run_parser  # noqa: I001

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import sys
import time

import envs
import metatrace as mt
from schema import (prog, DOMAIN_FLAGS, MAX_RUNS, OPTIONS, RUN_SETTINGS, _NUMBER, add_setting,
                    applies, check_domain,
                    checked, flag, is_net, join_numbers, option, run_name, settings, tuner_of)
from store import (RunLock, UsageError, check_out, check_whole, differing, out_flag,
                   read_config, settings_hash, write_json)


GRID_FLAGS = tuple(k for k, v in RUN_SETTINGS.items()   # every numeric setting of a run but
                   if isinstance(v.accepted, mt.Range) and k not in ("seed", "blas_threads"))
NOT_IN_SWEEP = ("seed", "resume")       # a sweep sets the seeds and always resumes


def parse_grid(text, name):
    """A grid: '2^-5,2^-7' (a list) or '2^-5..2^-14' (every power between); one value too."""
    if ".." in text:
        ends = text.split("..")
        ms = [_NUMBER.match(e) for e in ends]
        if len(ends) != 2 or not all(ms) or float(ms[0].group(1)) != float(ms[1].group(1)):
            raise UsageError(f"{flag(name)}: malformed range {text!r}; expected powers of one "
                             "base like 2^-5..2^-14")
        k0, k1 = float(ms[0].group(3)), float(ms[1].group(3))
        if k0 != int(k0) or k1 != int(k1):
            raise UsageError(f"{flag(name)}: range {text!r} needs integer exponents")
        if abs(k1 - k0) >= MAX_RUNS:
            raise UsageError(f"{flag(name)}: range {text!r} has {abs(k1 - k0) + 1:,.0f} values; "
                             f"a sweep takes at most {MAX_RUNS:,} runs")
        step = 1 if k1 >= k0 else -1
        values = [f"{ms[0].group(1)}^{k}" for k in range(int(k0), int(k1) + step, step)]
    else:
        values = [v.strip() for v in text.split(",")]
        if any(v == "" for v in values):
            raise UsageError(f"{flag(name)}: empty element in grid {text!r}")
        if len(values) > MAX_RUNS:
            raise UsageError(f"{flag(name)}: {len(values):,} values; a sweep takes at most "
                             f"{MAX_RUNS:,} runs")
    for v in values:
        checked(name, v)
    return values


def sweep_parser():
    """Flags of `run.py sweep`: the run flags, each numeric one taking a grid."""
    p = run_parser()
    p.prog = f"{prog()} sweep"
    p.description = main_sweep.__doc__
    p.formatter_class = argparse.HelpFormatter
    for a in list(p._actions):
        if a.dest in ("domain", "tuner", "activation"):
            a.choices = None          # comma lists, checked in expand()
            a.default = None if a.dest == "tuner" else a.default
        if a.dest in NOT_IN_SWEEP:
            p._remove_action(a)
            for s in a.option_strings:
                p._option_string_actions.pop(s, None)
            for g in p._action_groups:
                if a in g._group_actions:
                    g._group_actions.remove(a)
        if a.dest == "out":
            a.help = "sweep directory: one run directory per setting, and sweep.json"
    for name in ("seeds", "first_seed", "workers"):
        add_setting(p, name, OPTIONS[name])
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on Ray: 'local' starts a private local instance, 'auto' or HOST:PORT "
                        "joins a cluster (default: no Ray, a process pool of --workers)")
    return p


def grid_size(grids, seeds):
    """The number of runs a grid asks for, before building it."""
    n = seeds
    for v in grids.values():
        n *= len(v)
    return n


def expand(args):
    """The cartesian product of every grid -> a list of validated settings (defaults per domain).

    A flag that applies to none of the grid's runs is refused; where it applies to some, the
    others take its canonical value (so a setting that changes nothing makes no extra run)."""
    grids = {k: parse_grid(getattr(args, k), k) for k in GRID_FLAGS if getattr(args, k) is not None}
    for name, choices in (("domain", envs.DOMAINS), ("tuner", mt.TUNERS),
                          ("activation", RUN_SETTINGS["activation"].accepted)):
        if getattr(args, name) is None:
            continue
        vals = [v.strip() for v in getattr(args, name).split(",")]
        for v in vals:
            if name == "domain":
                envs.allow_module(v)          # the user's own grid
                check_domain(v)
            elif v not in choices:
                raise UsageError(f"--{name}: unknown value {v!r}; accepted: {', '.join(choices)}")
        grids[name] = vals
    seeds, first = option(args, "seeds"), option(args, "first_seed")
    n = grid_size(grids, seeds)
    if n > MAX_RUNS:
        raise UsageError(f"the grid has {n:,} runs; a sweep takes at most {MAX_RUNS:,}")
    keys = list(grids)
    out, seen, used, left_out = [], set(), set(), set()
    for combo in itertools.product(*(grids[k] for k in keys)):
        ns = argparse.Namespace(**vars(args))
        ns.__dict__.update(zip(keys, combo))
        tuner = tuner_of(ns)
        used |= {k for k in DOMAIN_FLAGS if getattr(ns, k) is not None
                 and applies(k, ns.domain, tuner)}
        for k in DOMAIN_FLAGS:
            if not applies(k, ns.domain, tuner):
                setattr(ns, k, None)
        if ns.steps is not None and ns.frames is not None and ns.domain in envs.ATARI_DOMAINS:
            raise UsageError("give --steps or --frames, not both")
        if mt.TUNER[tuner].two_tower and ns.towers is not None and checked("towers", ns.towers) != 2:
            left_out.add(tuner)           # a per-tower tuner on one tower: not a run
            continue
        for seed in range(first, first + seeds):
            ns.seed = str(seed)
            s = settings(ns, strict=False)
            h = settings_hash(s)
            if h not in seen:
                seen.add(h)
                out.append(s)
    for k in DOMAIN_FLAGS:
        if getattr(args, k) is not None and k not in used:
            typed = flag(k, getattr(args, k) is not False)
            raise UsageError(f"{typed} applies to none of the sweep's runs (domains "
                             f"{args.domain}, tuners {args.tuner or 'default'})")
    if left_out:
        print(f"sweep: --towers 1 left out for {', '.join(sorted(left_out))} (they run on two "
              "towers only)", file=sys.stderr)
    return out


def _worker_init(parent):
    """A pool worker of the sweep process `parent`: it dies with the sweep (on Linux the
    parent's death sends it SIGKILL; elsewhere a thread watches for it), and ignores SIGINT except
    while a run holds it (the run then checkpoints and stops)."""
    try:
        import ctypes
        PR_SET_PDEATHSIG = 1
        watched = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL,
                                                          0, 0, 0) == 0
    except (OSError, AttributeError):
        watched = False
    if os.getppid() != parent:                       # the sweep died before the call
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not watched:
        import threading

        def watch():
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()


def sweep_task(s, out, opts):
    """One run of a sweep (resumes an unfinished one) -> (status, mean return of last 100)."""
    envs.allow_module(s["domain"])    # s is the sweep's own grid, not read from a file
    meta = run(s, out, quiet=True, resume=True, harness=opts)
    return meta["status"], meta.get("mean_return_last100")


class SweepStop:
    """SIGINT/SIGTERM on the sweep: a first one stops it cleanly (the runs in flight checkpoint),
    a second one kills the workers."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, sig, frame):
        self.count += 1

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _pool_engine(tasks, workers, report, stop, tick=lambda: None):
    """Local process pool, one run per worker; a crashed worker's runs are retried once.
    tick() is called about every 2 s (the progress bar)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    pending = [(t, 0) for t in tasks]
    signalled, last_tick = 0, time.monotonic()
    while pending and not stop.count:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(),))
        inflight = {}
        try:
            while (pending and not stop.count) or inflight:
                while pending and not stop.count and len(inflight) < workers:
                    t, k = pending.pop(0)
                    inflight[pool.submit(sweep_task, *t)] = (t, k)
                if stop.count > signalled:           # pass the stop on to the runs in flight
                    signalled = stop.count
                    sig = signal.SIGINT if signalled == 1 else signal.SIGKILL
                    for p in list(getattr(pool, "_processes", {}).values()):
                        try:
                            os.kill(p.pid, sig)
                        except (OSError, AttributeError):
                            pass
                done, _ = wait(inflight, timeout=0.25, return_when=FIRST_COMPLETED)
                if time.monotonic() - last_tick > 2:
                    tick()
                    last_tick = time.monotonic()
                broken = False
                for fut in done:
                    t, k = inflight.pop(fut)
                    try:
                        report(t, fut.result(), None)
                    except Exception as e:  # a run that raised, or a worker that died
                        broken |= type(e).__name__ == "BrokenProcessPool"
                        retry = k == 0 and not stop.count
                        report(t, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                               + ("; retrying" if retry else ""))
                        if retry:
                            pending.append((t, 1))
                if broken:
                    for fut, (t, k) in inflight.items():   # the pool is gone: requeue its runs
                        pending.append((t, k))
                    inflight = {}
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def private_ray_process():
    """Run the rest of this sweep in a child process that leads a process group of its own
    (Ray's processes join it), in a new network namespace that has only a loopback interface
    (Linux; as root, or through an unprivileged user namespace), so that whatever Ray opens is
    reachable from this machine's loopback only.  This process waits, passes SIGINT/SIGTERM on
    and exits with the child's status; a small reaper process ends the whole group when this one
    ends, however it ends (kill -9 included).  OSError if the system refuses the namespace."""
    import ctypes
    import fcntl
    import socket
    import struct
    CLONE_NEWNET, CLONE_NEWUSER, PR_SET_PDEATHSIG = 0x40000000, 0x10000000, 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) was refused")
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"),
                           ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP, IFF_RUNNING = 0x8913, 0x8914, 0x1, 0x40
        ifr = fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", ifr)[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP | IFF_RUNNING))
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:                                   # the sweep and Ray's driver
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.setpgrp()
        if os.getppid() != parent:
            os._exit(1)
        return
    reaper = os.fork()
    if reaper == 0:                                  # ends the child's group when `parent` ends
        def end_group(*_):
            try:
                os.killpg(child, signal.SIGKILL)
            except OSError:
                pass
            os._exit(0)
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, end_group)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:
                end_group()
            while True:
                signal.pause()
        finally:
            os._exit(0)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, f: os.kill(child, s))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    os.kill(reaper, signal.SIGTERM)
    os.waitpid(reaper, 0)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
             else 128 + os.WTERMSIG(status))


MODULES = ("metatrace", "nets", "envs", "schema", "store", "runners", "run", "sweep", "figures",
           "bench", "algorithms")


def code_dir(here):
    """A fresh temporary directory holding only the project's modules: the code a Ray job ships
    to a cluster, whether this is a checkout or an installed package (site-packages)."""
    import tempfile
    d = tempfile.mkdtemp(prefix="metatrace-code-")
    for m in MODULES:
        shutil.copy2(os.path.join(here, m + ".py"), d)
    return d


RAY_MIN = (2, 59)      # the first Ray whose local clusters require token authentication


def start_ray(address, workers):
    """ray.init for `--ray ADDRESS`, or UsageError within 30 s.  Token authentication is on for
    every address.  'local' runs a private instance (its own loopback-only network namespace);
    a cluster address is checked for a listener first."""
    host, _, port = address.rpartition(":")
    if address not in ("local", "auto") and not (host and port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"--ray {address!r}: expected local, auto or HOST:PORT")
    os.environ["RAY_AUTH_MODE"] = "token"     # read by Ray when it is imported; every address
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs the ray package (pip install -r requirements.txt)") from None
    version = tuple(int(x) for x in re.findall(r"\d+", ray.__version__)[:2])
    if version < RAY_MIN:
        raise UsageError(f"--ray needs Ray >= {'.'.join(map(str, RAY_MIN))} (token "
                         f"authentication); this is Ray {ray.__version__}")
    here = os.path.dirname(os.path.abspath(__file__))
    env = {"env_vars": {k: "1" for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                          "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    if address == "local":
        try:
            private_ray_process()
        except OSError as e:
            raise UsageError(f"--ray local needs a private network namespace (so that Ray "
                             f"listens on loopback only), and this system refused one "
                             f"({e.strerror}); use the process pool (leave out --ray)") from None
        env["env_vars"]["PYTHONPATH"] = here     # workers import this checkout (and its cache)
        kwargs = dict(num_cpus=workers, include_dashboard=False, configure_logging=False)
    else:
        if address != "auto":
            import socket
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
            except OSError as e:
                raise UsageError(f"--ray {address}: no Ray cluster answers there "
                                 f"({e.strerror or e})") from None
        env.update(working_dir=code_dir(here))     # the modules alone, checkout or installed
        kwargs = dict(address=address)
    import threading
    watchdog = threading.Timer(30, lambda: (print(f"run.py: error: --ray {address}: no Ray "
                                                  "cluster connected within 30 s", file=sys.stderr,
                                                  flush=True), os._exit(2)))
    watchdog.daemon = True
    if address != "local":            # a local start may take longer the first time
        watchdog.start()
    saved, quiet = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 2)                  # Ray's start-up notes (offline IP, token) stay off stderr
    try:
        ray.init(runtime_env=env, log_to_driver=False, **kwargs)
    except Exception as e:
        hint = "" if address == "local" else (
            " (clusters run with token authentication: this client needs the cluster's token in "
            "RAY_AUTH_TOKEN, in the file RAY_AUTH_TOKEN_PATH names, or in ~/.ray/auth_token; "
            "docs/cluster.md)")
        raise UsageError(f"--ray {address}: {type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:160]}{hint}") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)
        watchdog.cancel()
    return ray


def _ray_engine(ray, tasks, report, stop, tick=lambda: None):
    """Ray: the same runs as remote tasks (retried once on failure); results on a shared disk.
    tick() is called about every 2 s (the progress bar)."""
    try:
        remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=True)(sweep_task)
        refs = {remote.remote(*t): t for t in tasks}
        last_tick = time.monotonic()
        while refs and not stop.count:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            if time.monotonic() - last_tick > 2:
                tick()
                last_tick = time.monotonic()
            if not done:
                continue
            t = refs.pop(done[0])
            try:
                report(t, ray.get(done[0]), None)
            except Exception as e:
                report(t, None, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
        for ref in refs:
            ray.cancel(ref)
    finally:
        ray.shutdown()


def read_manifest(root):
    """The runs already listed in ROOT/sweep.json (dir -> settings); UsageError if unreadable."""
    path = os.path.join(root, "sweep.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            m = json.load(f)
        runs = {r["dir"]: r["settings"] for r in m["runs"]}
        if not all(isinstance(v, dict) for v in runs.values()):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise UsageError(f"{path} is unreadable; it is not a sweep this code can extend") from None
    return runs


def check_sweep_root(root, tasks):
    """Whether ROOT can take these runs, writing nothing -> (listed runs, runs already done)."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise UsageError(f"--out {root} is a file, not a directory")
    if not os.path.isdir(root):
        check_out(root, {}, False)              # its nearest existing parent must be writable
        return {}, set()
    listed = read_manifest(root)
    entries = set(os.listdir(root)) - {".lock", "sweep.json", "sweep.json.tmp"}
    names = {os.path.basename(o) for _, o in tasks} | set(listed)
    strays = sorted(e for e in entries if e not in names and not os.path.exists(
        os.path.join(root, e, "config.json")))
    if strays:
        raise UsageError(f"--out {root} holds files that are not runs of a sweep (e.g. "
                         f"{strays[0]}); choose an empty or new directory")
    for d, s in listed.items():             # what sweep.json says must be what is on disk
        o = os.path.join(root, d)
        if os.path.exists(os.path.join(o, "config.json")):
            k = differing(read_config(o)["settings"], s)
            if k is not None:
                raise UsageError(f"{o} holds a run with another {k} than sweep.json lists")
    done = set()
    for s, o in tasks:
        if not os.path.isdir(o):
            if os.path.exists(o):
                raise UsageError(f"{o} is a file, not a run directory")
            continue
        if not os.path.exists(os.path.join(o, "config.json")):
            check_out(o, s, True)
            continue
        cfg = read_config(o)
        k = differing(cfg["settings"], s)
        if k is not None:
            raise UsageError(f"{o} holds a run with {k} = {cfg['settings'].get(k, '(absent)')!r}, "
                             f"but the sweep asks for {s.get(k, '(absent)')!r}")
        if cfg["status"] in ("finished", "diverged"):
            check_whole(o, cfg)
            done.add(o)
    return listed, done


class SweepProgress:
    """The work a sweep has done, in agent steps when every run is on a network domain, else in
    episodes, read from each run's episodes.csv as it grows (new bytes only)."""

    def __init__(self, tasks):
        self.net = all(is_net(s["domain"]) for s, _, _ in tasks)
        self.unit = "step" if self.net else "ep"
        self.budget = {o: s["steps"] if self.net else (s["episodes"] or 0) for s, o, _ in tasks}
        self.total = sum(self.budget.values()) if self.net or all(
            not is_net(s["domain"]) for s, _, _ in tasks) else None
        self.read, self.ended = {}, set()      # per run: (bytes read, rows, last steps)

    def end(self, out):
        """A run that finished or diverged counts its whole budget."""
        self.ended.add(out)

    def _grown(self, out):
        path = os.path.join(out, "episodes.csv")
        off, rows, last = self.read.get(out, (0, -1, 0))
        try:
            with open(path, "rb") as f:
                f.seek(off)
                data = f.read()
        except OSError:
            return 0
        cut = data.rfind(b"\n") + 1
        if cut:
            lines = data[:cut].split(b"\n")[:-1]
            rows += len(lines)
            if self.net and rows > 0:
                try:
                    last = int(lines[-1].split(b",")[4])      # the steps column
                except (IndexError, ValueError):
                    pass
            self.read[out] = (off + cut, rows, last)
        return last if self.net else max(rows, 0)

    def done(self):
        """Units of work done so far (None when runs of both kinds share the sweep)."""
        if self.total is None:
            return None
        return sum(self.budget[o] if o in self.ended else min(self._grown(o), self.budget[o])
                   for o in self.budget)


def main_sweep(argv):
    """`python run.py sweep ...`: every combination of the grids, --seeds runs each.  Each run
    has its own directory (a readable name plus the hash of all its settings); a re-run skips
    the runs that are done and resumes the others."""
    from tqdm import tqdm
    args = sweep_parser().parse_args(join_numbers(argv))
    workers = option(args, "workers")
    opts = run_options(args)
    if args.ray is not None and not args.ray.strip():
        raise UsageError("--ray: expected local, auto or HOST:PORT")
    runs = expand(args)
    root = os.path.abspath(out_flag(args.out, "runs/sweep"))
    tasks = [(s, os.path.join(root, run_name(s)), opts) for s in runs]
    listed, finished = check_sweep_root(root, [(s, o) for s, o, _ in tasks])
    ray = start_ray(args.ray, workers) if args.ray else None
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {root} cannot be created ({e.strerror})") from None
    with RunLock(root, "sweep"):
        listed, finished = check_sweep_root(root, [(s, o) for s, o, _ in tasks])
        listed.update({os.path.basename(o): s for s, o, _ in tasks})
        write_json(os.path.join(root, "sweep.json"),
                   {"command": ["run.py", "sweep", *argv], "n_runs": len(listed),
                    "runs": [{"dir": d, "settings": listed[d]} for d in sorted(listed)]})
        todo = [t for t in tasks if t[1] not in finished]
        print(f"sweep: {len(tasks)} runs in {root}; {len(tasks) - len(todo)} already done, "
              f"{len(todo)} to run on {'Ray ' + args.ray if args.ray else f'{workers} workers'}",
              flush=True)
        failed = {}
        os.environ.update(NUMBA_NUM_THREADS="1")
        progress = SweepProgress(tasks)
        for o in finished:
            progress.end(o)
        by_work = progress.total is not None
        with SweepStop() as stop, tqdm(total=progress.total if by_work else len(tasks),
                                       initial=progress.done() if by_work else len(tasks) - len(todo),
                                       unit=progress.unit if by_work else "run",
                                       unit_scale=by_work, disable=args.quiet,
                                       dynamic_ncols=True) as bar:
            runs_done = [len(tasks) - len(todo)]

            def report(t, result, error):
                name = os.path.basename(t[1])
                if error is None:
                    failed.pop(name, None)
                    if result[0] != "interrupted":
                        progress.end(t[1])
                        runs_done[0] += 1
                        if not by_work:
                            bar.update(1)
                else:
                    failed[name] = error
                    bar.write(f"run {name} failed: {error}")
                bar.set_postfix(runs=f"{runs_done[0]}/{len(tasks)}", failed=len(failed),
                                refresh=False)

            def tick():
                if by_work and not args.quiet:
                    bar.n = progress.done()
                    bar.refresh()

            if ray is not None:
                _ray_engine(ray, todo, report, stop, tick)
            else:
                _pool_engine(todo, workers, report, stop, tick)
            tick()
        counts = {}
        for _, o, _ in tasks:
            try:
                st = read_config(o)["status"] if os.path.isdir(o) else "not started"
            except UsageError:
                st = "not started"
            counts[st] = counts.get(st, 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=str))
        if stop.count:
            print(f"run.py: sweep interrupted ({summary}); run the same command to continue",
                  file=sys.stderr)
            return 130
        print("sweep done: " + summary)
        if failed:
            print(f"run.py: {len(failed)} runs failed twice: {', '.join(sorted(failed))}",
                  file=sys.stderr)
            return 1
    return 0
