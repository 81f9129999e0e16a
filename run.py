"""metatrace experiment runner.

    python run.py --domain mountaincar                       one run on the defaults
    python run.py --domain mountaincar --tuner scalar --alpha 2^-9 --mu 2^-8 --episodes 1000
                  --seed 0 --out runs/x                      one run, every setting explicit
    python run.py bench --domain mountaincar                 agent steps/s for every tuner
    python run.py sweep --alpha 2^-3..2^-12 --mu 2^-6,2^-8 --seeds 10 --out runs/s   a grid of runs
    python run.py figures --fig 2 runs/s --out figs          a paper figure from results
    python run.py --domain CartPole-v1 --steps 50000         any gymnasium id (discrete actions)
    python run.py evaluate OUT --episodes 100 --greedy       a finished run's agent, no learning
    python run.py plot runs/s --by alpha --out curves.png    learning curves grouped by a setting

A run writes OUT/config.json (every setting, provenance, status), OUT/episodes.csv (one row
per episode, written whole as each episode finishes, so a killed run keeps them), OUT/timing.csv
(wall-clock seconds per episode) and, when it finishes, OUT/agent.npz (the trained agent). One
process at a time holds a run directory. Numbers accept decimals (0.001, 1e-3) and powers (2^-9).
"""
import os

# one BLAS thread per run, whatever the caller's environment says (set before numpy is imported):
# the network's small products are fastest single-threaded, a sweep's runs must not fight over
# cores, and another thread count changes a network run's sums in the last digits
# (`--blas-threads N` asks for more)
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import math  # noqa: E402
import statistics
import sys
import time
from typing import NamedTuple

import numpy as np

import envs
import metatrace as mt
import schema
from runners import LayerLog, LinearRunner, NetRunner, make_agent, make_env
from schema import (OPTIONS, Parser, add_setting, checked, config_of, flag, is_net,
                    join_numbers, option, parse_number, run_name, settings, stored_settings)
from store import (AGENT_FILE, CKPT, CKPT_PREV, EVAL_FIELDS, TIMING_FIELDS, CheckpointError,
                   Interrupt, RunLock, UsageError, _remove, check_out, finite_stats,
                   load_checkpoint, out_flag, provenance, read_config, read_rows, restart_csv,
                   rows_until, save_agent, save_checkpoint, settings_hash, write_json)


def run_parser():
    """The flags of a single run (schema.run_parser), with this command's usage text."""
    return schema.run_parser(__doc__)



class Harness(NamedTuple):
    """How a run is kept and watched (none of it changes a result): checkpoints every `minutes`
    minutes, at a clean stop and, unless `every` is None, every `every` episodes, kept at the
    end or not; an evaluation of `eval_episodes` episodes every `eval_every` episodes (None:
    none), greedy or sampled; TensorBoard scalars."""
    every: object = None
    minutes: float = 2.0
    keep: bool = False
    eval_every: object = None
    eval_episodes: int = 10
    eval_greedy: bool = False
    tensorboard: bool = False


def run(s, out, quiet=False, resume=False, harness=Harness()):
    """One run: episodes to OUT/episodes.csv as they finish, config and outcome to OUT/config.json,
    the trained agent to OUT/agent.npz, wall-clock times to OUT/timing.csv.

    Mountain car runs `episodes` episodes, the network domains `steps` agent steps. Checkpoints
    between episodes (see Harness) and on SIGINT/SIGTERM; with resume=True an unfinished run
    continues from its last checkpoint (bit-identical results).
    The process holds OUT's lock throughout; a finished or diverged run is returned untouched."""
    old = check_out(out, s, resume)
    if old is not None:
        return old
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out} cannot be created ({e.strerror})") from None
    with RunLock(out):
        old = check_out(out, s, resume)          # again, now that no one else can write here
        if old is not None:
            return old
        return _run_locked(s, out, quiet, resume, harness)


def compile_note(net, quiet):
    """One line on stderr when the run's Numba kernels are not in the on-disk cache yet."""
    mt.compile_note(mt.net_step if net else envs.mc_episode, schema.prog(), quiet)


def tensorboard_writer():
    """TensorBoard's SummaryWriter class (torch's, or tensorboardX's); UsageError if neither."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise UsageError("--tensorboard needs a TensorBoard writer: pip install tensorboardX "
                             "(or tensorboard with torch)") from None
    return SummaryWriter


def eval_seed(s, *key):
    """A fresh seed for an evaluation (never a training stream): SeedSequence(seed, *key)."""
    return int(np.random.SeedSequence([s["seed"], *key]).generate_state(1)[0] >> 1)


def evaluate_returns(agent, start, s, episodes, greedy, key):
    """Returns (the game score on network domains) of `episodes` episodes of `agent` without
    learning, on environment and action streams seeded from `key` alone; `start`: the drift
    signs a mountain-car agent meets at the start, or on the network domains the observation
    statistics of --normalize-obs, frozen (None without it)."""
    if not is_net(s["domain"]):
        return envs.mc_evaluate(agent, start, s["drift"], episodes, greedy, eval_seed(s, *key))
    env = make_env(s, seed=eval_seed(s, *key), moments=start)
    rng = np.random.default_rng(eval_seed(s, *key, 1))
    scores = []
    try:
        for _ in range(episodes):
            obs, _ = env.reset()
            score, done = 0.0, False
            while not done:
                obs, R, term, trunc, info = env.step(agent.act(obs, greedy, rng))
                score += info.get("score", R)
                done = term or trunc
            scores.append(score)
    finally:
        env.close()
    return scores


def mean_se(xs):
    """(mean, standard error) of a list of numbers (s.e. 0 for one number)."""
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0)


def _run_locked(s, out, quiet, resume, hz):
    """`run` once OUT is locked and checked."""
    from tqdm import tqdm
    path = {k: os.path.join(out, k) for k in ("config.json", "episodes.csv", "timing.csv",
                                               "eval.csv")}
    net = is_net(s["domain"])
    blas = None
    if net and s["blas_threads"] != 1:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(s["blas_threads"], user_api="blas")
    compile_note(net, quiet)
    runner = NetRunner(s) if net else LinearRunner(s)
    tc = time.perf_counter()
    runner.warm_up()
    compile_seconds = time.perf_counter() - tc
    rows = read_rows(path["episodes.csv"], 10**12) if resume else []
    done = load_checkpoint(out, runner, s, len(rows)) if resume else 0
    rows = rows[:done]
    meta = {"settings": s, "settings_hash": settings_hash(s), "provenance": provenance(),
            "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "compile_seconds": round(compile_seconds, 3)}
    if done:
        meta["resumed_from_episode"] = done
    write_json(path["config.json"], meta)
    returns = [float(r["score" if net else "return"]) for r in rows]
    steps = int(rows[-1]["steps"]) if rows else 0
    fields = runner.fields()
    timing = read_rows(path["timing.csv"], done) if resume else []
    evals = rows_until(path["eval.csv"], done) if resume else []
    tb = tensorboard_writer()(os.path.join(out, "tensorboard")) if hz.tensorboard else None
    more = (lambda ep, st: st < s["steps"]) if net else (lambda ep, st: ep < s["episodes"])
    steps0, status, ep = steps, "finished", done
    last_stats, _ = finite_stats(runner.stats(), {})
    writers = []
    try:
        writer = restart_csv(path["episodes.csv"], fields, rows)
        writers.append(writer)
        twriter = restart_csv(path["timing.csv"], TIMING_FIELDS, timing, buffered=True)
        writers.append(twriter)
        layers = LayerLog(runner, os.path.join(out, "layers.csv"), done, resume) if net else None
        if layers is not None:
            writers.append(layers)
        ewriter = None
        if hz.eval_every is not None:
            ewriter = restart_csv(path["eval.csv"], EVAL_FIELDS, evals)
            writers.append(ewriter)
        elapsed0 = float(timing[-1]["elapsed_seconds"]) if timing else 0.0
        t0 = last_ckpt = t_ep = time.perf_counter()
        with Interrupt() as stop, \
                tqdm(total=s["steps"] if net else s["episodes"], initial=steps if net else done,
                     unit="step" if net else "ep", unit_scale=net, disable=quiet,
                     dynamic_ncols=True) as bar:
            while more(ep, steps):
                row, ok = runner.next_row(s["steps"] - steps if net else 0,
                                          bar.update if net else (lambda k: None))
                stats, finite = finite_stats(runner.stats(), last_stats)
                ok = ok and finite
                row["diverged"] = int(not ok)
                last_stats = stats
                steps += row["length"]
                returns.append(row["score" if net else "return"])
                writer.write({"episode": ep, "steps": steps, **row, **stats})
                now = time.perf_counter()
                twriter.write({"episode": ep, "seconds": round(now - t_ep, 6),
                               "elapsed_seconds": round(elapsed0 + now - t0, 6)})
                t_ep = now
                if tb is not None:
                    for k, v in {"return": returns[-1], "length": row["length"], **stats}.items():
                        tb.add_scalar(k, v, steps)
                ep += 1
                if layers is not None and ok:
                    layers.after(ep, steps)
                if ewriter is not None and ok and ep % hz.eval_every == 0:
                    m, se = mean_se(evaluate_returns(*runner.policy_of(), s, hz.eval_episodes,
                                                     hz.eval_greedy, (1, ep)))
                    ewriter.write({"episode": ep, "steps": steps, "eval_mean": m, "eval_se": se,
                                   "eval_episodes": hz.eval_episodes,
                                   "greedy": int(hz.eval_greedy)})
                    if tb is not None:
                        tb.add_scalar("eval_mean", m, steps)
                    t_ep = time.perf_counter()
                if not net:
                    bar.update(1)
                if not quiet and (ep % 10 == 0 or not more(ep, steps)):
                    bar.set_postfix({"score10" if net else "ret100":
                                     f"{np.mean(returns[-10 if net else -100:]):.1f}"},
                                    refresh=False)
                if not ok:
                    status = "diverged"
                    break
                now = time.perf_counter()
                if (stop.signal is not None or now - last_ckpt > 60 * hz.minutes
                        or hz.every is not None and ep % hz.every == 0):
                    twriter.flush()              # complete up to the checkpoint's episode
                    save_checkpoint(out, runner, s, ep)
                    last_ckpt = now
                if stop.signal is not None:
                    status = "interrupted"
                    break
        wall = time.perf_counter() - t0
    except OSError:                  # a full or failing disk: main_run says how to resume
        raise
    except Exception as e:           # the run stops here: say so in config.json, keep the rows
        meta.update(status="failed", error=f"{type(e).__name__}: {e}"[:300], episodes_done=ep,
                    agent_steps=steps)
        try:
            write_json(path["config.json"], meta)
        except OSError:
            pass
        raise
    finally:
        failed = sys.exc_info()[0] is not None
        for w in writers:
            try:
                w.close()
            except OSError:
                if not failed:   # else the error already on its way is the one reported
                    raise
        if tb is not None:
            tb.close()
        if blas is not None:
            blas.unregister()
    if status == "finished":
        save_agent(runner, out, {"settings_hash": settings_hash(s), "seed": s["seed"]})
    meta.update(status=status, episodes_done=ep, agent_steps=steps, wall_seconds=round(wall, 3),
                steps_per_second=round((steps - steps0) / wall, 1) if wall > 0 else None,
                mean_return_last100=float(np.mean(returns[-100:])) if returns else None)
    if status == "diverged":
        meta["diverged_at_episode"] = ep - 1
    write_json(path["config.json"], meta)
    if status != "interrupted" and not hz.keep:
        for name in (CKPT, CKPT_PREV):
            _remove(os.path.join(out, name))
    return meta


def run_options(args):
    """The harness options of a run (checkpoints, evaluation, TensorBoard), validated."""
    if args.eval_every is None:
        for name in ("eval_episodes", "eval_greedy"):
            if getattr(args, name) not in (None, False):
                raise UsageError(f"{flag(name)} needs --eval-every")
    if args.tensorboard:
        tensorboard_writer()
    return Harness(every=option(args, "checkpoint_every"),
                   minutes=option(args, "checkpoint_minutes"), keep=args.keep_checkpoint,
                   eval_every=option(args, "eval_every") if args.eval_every is not None else None,
                   eval_episodes=option(args, "eval_episodes"),
                   eval_greedy=bool(args.eval_greedy), tensorboard=bool(args.tensorboard))


def main_run(argv):
    """`python run.py [flags]`: one run."""
    args = run_parser().parse_args(join_numbers(argv))
    s = settings(args)
    opts = run_options(args)
    out = out_flag(args.out, os.path.join("runs", run_name(s) + time.strftime("-%Y%m%d-%H%M%S")))
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out, the directory of the run to continue")
    if args.resume and not os.path.isdir(args.out):
        raise UsageError(f"--resume: {args.out} is not a run directory (it does not exist)")
    if args.resume and not os.path.exists(os.path.join(args.out, "config.json")):
        raise UsageError(f"--resume: {args.out} holds no run (no config.json)")
    if args.resume:
        stored_settings(read_config(out)["settings"], os.path.join(out, "config.json"))
    try:
        meta = run(s, out, quiet=args.quiet, resume=args.resume, harness=opts)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        rows = max(len(read_rows(os.path.join(out, "episodes.csv"), 10**12)), 0)
        print(f"run.py: error: writing to {out} failed ({e.strerror or e}); episodes.csv keeps "
              f"{rows} whole episodes; free the space and continue with the same command and "
              "--resume", file=sys.stderr)
        return 1
    last100 = meta.get("mean_return_last100")
    msg = (f"{meta['status']}: {meta['episodes_done']} episodes, {meta['agent_steps']} steps in "
           f"{meta['wall_seconds']:.1f} s; mean return of the last 100 episodes "
           f"{last100 if last100 is None else round(last100, 1)}; results in {out}")
    if meta["status"] == "finished":
        print(msg)
        return 0
    if meta["status"] == "diverged":
        print(f"diverged (non-finite or vanishing weights, step-sizes or statistics) in episode "
              f"{meta['diverged_at_episode']}; {msg}", file=sys.stderr)
        return 0
    print(f"{msg}; continue it with the same command and --resume", file=sys.stderr)
    return 130


STABILIZER_FLAGS = ("--sparse-init", "--layer-norm", "--normalize-obs", "--scale-reward")
BENCH_CONTINUOUS = {"none": "2^-10", "obgd": "1", "adaptive_obgd": "1",
                    "stream_ac": "1"}                                      # else alpha0 2^-8


def main_bench(argv):
    """`python run.py bench`: median agent steps/s (environment included) per tuner, one core."""
    p = Parser(prog=f"{schema.prog()} bench", description=main_bench.__doc__)
    p.add_argument("--domain", default="mountaincar", metavar="DOMAIN",
                   help="a built-in domain or a gymnasium id (default mountaincar)")
    p.add_argument("--hidden", default=None, metavar="W1,W2",
                   help="gymnasium ids: the MLP's hidden widths (default that of a run)")
    add_setting(p, "repeats", OPTIONS["repeats"])
    p.add_argument("--episodes", default=None, help="mountain car: episodes per repeat (200)")
    p.add_argument("--steps", default=None, help="network domains: agent steps per repeat (300)")
    add_setting(p, "threads", OPTIONS["threads"])
    add_setting(p, "towers", schema.RUN_SETTINGS["towers"])
    args = p.parse_args(join_numbers(argv))
    envs.allow_module(args.domain)
    schema.check_domain(args.domain)
    if args.hidden is not None and not envs.is_gym_id(args.domain):
        raise UsageError(f"--hidden does not apply to domain {args.domain}")
    if args.episodes is not None and is_net(args.domain):
        raise UsageError(f"--episodes does not apply to domain {args.domain}; it takes --steps")
    if args.steps is not None and not is_net(args.domain):
        raise UsageError(f"--steps does not apply to domain {args.domain}; it takes --episodes")
    if args.towers is not None and not is_net(args.domain):
        raise UsageError(f"--towers does not apply to domain {args.domain}")
    args.episodes, args.steps = args.episodes or "200", args.steps or "300"
    towers = 1 if args.towers is None else checked("towers", args.towers)
    repeats, threads = option(args, "repeats"), option(args, "threads")
    if hasattr(os, "sched_setaffinity"):
        avail = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(avail[:threads]))
        where = f"pinned to CPU {','.join(map(str, avail[:threads]))}"
    else:
        where = "not pinned"
    import numba

    import bench
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if is_net(args.domain):
        continuous = envs.is_gym_id(args.domain) and envs.gym_policy(args.domain) == "gaussian"
        if continuous:
            print(f"{args.domain}: with the four stabilizers and alpha {BENCH_CONTINUOUS}, the "
                  "other settings at their defaults (at the defaults alone it diverges at once)")

        def make_runner(tuner):
            flags = ["--domain", args.domain, "--tuner", tuner]
            flags += [] if args.hidden is None else ["--hidden", args.hidden]
            flags += ["--towers", "2"] if towers == 2 else []
            if continuous:
                flags += [*STABILIZER_FLAGS, "--alpha", BENCH_CONTINUOUS.get(tuner, "2^-8")]
            return NetRunner(settings(run_parser().parse_args(flags)))
        def make_env(domain):
            return envs.make(domain, **({"clip_rewards": True}
                                        if domain in envs.ATARI_DOMAINS else {}))
        return bench.agent_steps(args.domain, repeats, checked("steps", args.steps), where,
                                 make_runner, make_env, towers)

    def make(tuner, alpha, mu, norm):
        flags = ["--domain", args.domain, "--tuner", tuner, "--alpha", alpha]
        flags += ([] if mu is None else ["--mu", mu]) + ([] if norm else ["--unnormalized"])
        return make_agent(settings(run_parser().parse_args(flags)))
    return bench.linear(args.domain, repeats, checked("episodes", args.episodes), where, make)


def load_run_agent(out):
    """(settings, agent, drift signs) of a finished run directory; UsageError if it has none."""
    if not os.path.isdir(out):
        raise UsageError(f"{out} is not a run directory")
    cfg = read_config(out)
    s = stored_settings(cfg["settings"], os.path.join(out, "config.json"))
    path = os.path.join(out, AGENT_FILE)
    if not os.path.exists(path):
        raise UsageError(f"{out} holds no {AGENT_FILE} (run status {cfg['status']}; only a "
                         "finished run keeps its agent)")
    try:
        meta, _ = mt.read_agent(path)
        made_by = meta.get("run")
        if not (isinstance(made_by, dict) and made_by.get("settings_hash") == settings_hash(s)
                and made_by.get("seed") == s["seed"]):
            raise ValueError("it was not saved by this run (its record of the run that made it "
                             f"is {made_by!r}, this run's settings hash is {settings_hash(s)})")
        agent = mt.load(path)
        if agent.config != config_of(s):
            raise ValueError("its settings are not those of the run's config.json")
        signs = meta["extra"].get("drift_signs")
        if is_net(s["domain"]) and s.get("normalize_obs"):
            signs = envs.saved_moments(meta["extra"], agent.net.obs_shape)
        if not is_net(s["domain"]):
            want = (envs.N_TILE_FEATURES,)
            if signs is None or signs.shape != want or not np.isin(signs, (-1.0, 1.0)).all():
                raise ValueError("its drift signs are missing or not +-1")
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: {e}") from None
    return s, agent, signs


def main_evaluate(argv):
    """`run.py evaluate OUT --episodes N [--greedy]`: the trained agent of run OUT on fresh
    environment seeds, without learning; prints the mean return (game score) and its s.e."""
    p = Parser(prog=f"{schema.prog()} evaluate", description=main_evaluate.__doc__)
    p.add_argument("out", metavar="OUT", help="a finished run's directory (holds agent.npz)")
    p.add_argument("--episodes", default="10", metavar="N",
                   help="evaluation episodes (default 10); integers >= 1 and <= 1,000,000")
    p.add_argument("--greedy", action="store_true",
                   help="the most probable action (default: actions sampled from pi)")
    p.add_argument("--domain", default=None, metavar="MODULE:ID",
                   help="the run's domain, needed for a gymnasium module:id domain: its module is "
                        "imported only when named here (a stored setting never imports code)")
    args = p.parse_args(argv)
    if args.domain is not None:
        envs.allow_module(args.domain)
    n = parse_number(args.episodes, "episodes")
    if not mt.Range(1, 10**6, integer=True).ok(n):
        raise UsageError(f"--episodes {args.episodes} is outside the accepted range integers "
                         ">= 1 and <= 1,000,000")
    s, agent, signs = load_run_agent(args.out)
    if args.domain is not None and args.domain != s["domain"]:
        raise UsageError(f"--domain {args.domain} is not the run's domain {s['domain']}")
    returns = evaluate_returns(agent, signs, s, int(n), args.greedy, (2,))
    m, se = mean_se(returns)
    game = s["domain"] in envs.ATARI_DOMAINS + envs.MINATAR_DOMAINS
    print(f"{s['domain']} {s['tuner']}: mean {'score' if game else 'return'} "
          f"{m:.2f} ± {se:.2f} (s.e.) over {int(n)} episodes, "
          f"{'greedy' if args.greedy else 'sampled'} actions, fresh environment seeds")
    return 0


def main(argv=None):
    """Dispatch `run.py [bench|sweep|figures|plot|evaluate] ...`; bad input -> one line on
    stderr, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    if list(argv) == ["--version"]:
        print(f"{schema.prog()} {mt.__version__}")
        return 0
    try:
        if argv and argv[0] == "evaluate":
            return main_evaluate(argv[1:])
        if argv and argv[0] == "plot":
            import figures
            return figures.plot_main(argv[1:], prog=f"{schema.prog()} plot")
        if argv and argv[0] == "bench":
            return main_bench(argv[1:])
        if argv and argv[0] == "sweep":
            import sweep
            return sweep.main_sweep(argv[1:])
        if argv and argv[0] == "figures":
            import figures
            return figures.main(argv[1:], prog=f"{schema.prog()} figures")
        return main_run(argv)
    except UsageError as e:
        print(f"{schema.prog()}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
