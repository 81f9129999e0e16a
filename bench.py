"""Benchmarks that print figures (docs/performance.md says what they mean).

    python run.py bench --domain mountaincar      agent steps/s per tuner, environment included
    python run.py bench --domain seaquest         ms per network step: forward, backward, tuner
    python -c "import bench; bench.tuner_phase()" the tuner phase against its memory floor
    python -c "import bench; bench.network()"     the network's forward, vjp and jvp

Every figure is a median over repeats (`timed`); the tuners take turns, so that a slow spell of a
shared machine falls on all of them alike.  Compare figures only when measured side by side.
"""
import os
import statistics
import time

import numba as nb
import numpy as np

import metatrace as mt
import nets

LINEAR_TUNERS = [(t.name, *t.bench) for t in mt.TUNER_TABLE if not t.two_tower]   # (alpha0, mu): each row's
NET_TUNERS = tuple(t.name for t in mt.TUNER_TABLE if not t.needs_zh and not t.two_tower)
# (SID-R, NOSID-R: linear only); with --towers 2 the per-tower tuners too
TOWER_TUNERS = NET_TUNERS + tuple(t.name for t in mt.TUNER_TABLE if t.two_tower)


def timed(call, repeats, before=None, warm=True):
    """Seconds of each of `repeats` calls of call(), after one untimed call if warm (before()
    runs untimed ahead of each)."""
    if warm:
        call()
    times = np.empty(repeats)
    for r in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        call()
        times[r] = time.perf_counter() - t0
    return times


def linear(domain, repeats, episodes, where, make_agent):
    """Agent steps/s per tuner on a mountain-car domain: median of `repeats` runs of `episodes`
    episodes after a 100-episode warm-up.  make_agent(tuner, alpha, mu, normalized)."""
    print(f"{domain}: agent steps/s, environment included, median of {repeats} repeats of "
          f"{episodes} episodes after a 100-episode warm-up; {where}")
    print(f"{'tuner':<18}{'alpha0':>8}{'mu':>8}{'median':>12}{'min':>12}{'max':>12}")
    for tuner, alpha, mu in LINEAR_TUNERS:
        for norm in ([True, False] if mt.TUNER[tuner].normalizable else [True]):
            mu_used = mu if norm or mu is None else "2^-16"
            agent = make_agent(tuner, alpha, mu_used, norm)
            for _ in range(100):
                agent.episode()
            steps = []
            times = timed(lambda: steps.append(sum(agent.episode()[1] for _ in range(episodes))),
                          repeats, warm=False)
            rates = [n / t for n, t in zip(steps, times)]
            name = tuner + ("" if norm else " (unnorm.)")
            print(f"{name:<18}{alpha:>8}{mu_used or '-':>8}{statistics.median(rates):>12,.0f}"
                  f"{min(rates):>12,.0f}{max(rates):>12,.0f}", flush=True)
    return 0


def network(net_name="atari", n_actions=18, repeats=200, dtype=np.float32, seed=0):
    """Print the median wall time per call of forward, vjp (k = 3, 2, 1 cotangents) and jvp."""
    net = nets.ATARI(n_actions) if net_name == "atari" else nets.MINATAR(4, n_actions)
    rng = np.random.default_rng(seed)
    theta = nets.init_params(net, rng, dtype)
    obs = rng.random(net.obs_shape).astype(dtype)
    ws = nets.workspace(net, dtype, 3)
    cot = rng.standard_normal((3, 1 + n_actions)).astype(dtype)
    out = np.zeros((3, net.n_params), dtype)
    direction = rng.standard_normal(net.n_params).astype(dtype)
    lazy = nets.factored_layer(net)
    calls = {"forward": lambda: nets.forward(net, theta, obs, ws),
             "vjp k=3": lambda: nets.vjp(net, theta, ws, cot, out),
             "vjp k=1": lambda: nets.vjp(net, theta, ws, cot[:1], out[:1]),
             "vjp k=3 lazy": lambda: nets.vjp(net, theta, ws, cot, out, lazy),
             "vjp k=2 lazy": lambda: nets.vjp(net, theta, ws, cot[:2], out[:2], lazy),
             "vjp k=1 lazy": lambda: nets.vjp(net, theta, ws, cot[:1], out[:1], lazy),
             "jvp": lambda: nets.jvp(net, theta, ws, direction)}
    print(f"{net_name} |A|={n_actions} {np.dtype(dtype).name} n_params={net.n_params} "
          f"numba threads={nb.get_num_threads()} "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    median = {}
    for name, call in calls.items():
        times = timed(call, repeats)
        median[name] = np.median(times) * 1e3
        print(f"  {name:12s} {median[name]:7.3f} ms  (10%-90%: {np.quantile(times, .1) * 1e3:.3f}"
              f"-{np.quantile(times, .9) * 1e3:.3f})")
    step = 2 * median["forward"] + median["vjp k=3 lazy"] + median["vjp k=1 lazy"]
    print(f"  step: forward, vjp k=3 lazy, forward, vjp k=1 lazy = {step:.3f} ms")
    return median


def env_alone(env, steps, seed=0):
    """(seconds of `steps` environment steps, resets included, with uniformly random actions
    drawn beforehand; seconds of drawing those actions with action_space.sample())."""
    env.action_space.seed(seed)
    t0 = time.perf_counter()
    actions = [env.action_space.sample() for _ in range(steps)]
    drawing = time.perf_counter() - t0
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return time.perf_counter() - t0, drawing


def agent_steps(domain, repeats, steps, where, make_runner, make_env, towers=1):
    """Per tuner: median learner time per agent step (policy + learn, one Numba call each, as in
    a run), its split into forward / backward / tuner update (from a second pass with learn split
    into its phases, which adds their calls' overhead), the rest of the loop (environment,
    wrappers, Python) and agent steps/s; and the environment's own step (make_env(domain), random
    actions drawn beforehand: a simulator step alone) measured in the same turns, with the
    learner / environment ratio, and the learner's time over the untuned learner's (the median of
    the ratios of the same repeat).  The repeats go
    round the tuners in turn; each pass starts with 50 unmeasured steps, which bring the caches
    back from the previous tuner.  make_runner(tuner) -> an object with .agent and
    .episode(max_steps).  towers = 2: every network tuner on two towers, the learner split into
    its policy call (both forward passes at S_t) and its learn call instead."""
    tuners = TOWER_TUNERS if towers == 2 else NET_TUNERS
    print(f"{domain}: median over {repeats} repeats of {steps} agent steps after a warm-up, the "
          f"tuners taking turns; {where}; float32; times in ms per agent step")
    runners = {}
    for tuner in tuners:
        runners[tuner] = make_runner(tuner)
        runners[tuner].episode(64)                           # compile and warm up
    rows = {tuner: [] for tuner in tuners}
    alone = []
    sim = make_env(domain)
    env_alone(sim, 50)

    def measure(runner, clock):
        """(agent.clock in ms per step, wall ms per step, steps/s) of one pass of `steps`."""
        done = [0]

        def warm():
            runner.episode(50)
            runner.agent.clock = np.zeros(clock)
            done[0] = 0

        def go():
            while done[0] < steps:
                done[0] += runner.episode(steps - done[0])[2]
        wall = timed(go, 1, warm, warm=False)[0]
        n = done[0]
        return runner.agent.clock * 1e3 / n, wall * 1e3 / n, n / wall
    for _ in range(repeats):
        alone.append(np.array(env_alone(sim, steps)) * 1e3 / steps)
        for tuner in tuners:
            light, wall, rate = measure(runners[tuner], 2)
            split = light if towers == 2 else measure(runners[tuner], 3)[0]
            rows[tuner].append([*split, light.sum(), wall - light.sum(), rate])
    env_ms, draw_ms = np.median(np.array(alone), axis=0)
    print(f"environment alone (random actions drawn beforehand): {env_ms:.3f} ms per step; "
          f"drawing one with action_space.sample(), not included: {draw_ms:.3f} ms")
    cols = ("policy", "learn", "") if towers == 2 else ("forward", "backward", "tuner")
    print(f"{'tuner':<14}{cols[0]:>9}{cols[1]:>10}{cols[2]:>8}{'learner':>9}{'rest':>8}"
          f"{'steps/s':>9}{'learner/env':>13}{'/ none':>8}")
    for tuner in tuners:
        med = np.median(np.array(rows[tuner]), axis=0)
        third = "" if towers == 2 else f"{med[2]:.3f}"
        print(f"{tuner:<14}{med[0]:>9.3f}{med[1]:>10.3f}{third:>8}{med[-3]:>9.3f}"
              f"{med[-2]:>8.3f}{med[-1]:>9.0f}{med[-3] / env_ms:>13.2f}"
              f"{np.median([a[-3] / b[-3] for a, b in zip(rows[tuner], rows['none'])]):>8.2f}",
              flush=True)
    return 0


@nb.njit(cache=True)
def touch_rows(W, rows, f):
    """Read and write each of W's listed rows once (w <- f w, f = 1 at run time), all rows in
    one sweep (256 entries of each in turn, as a fused pass streams them): the least memory
    traffic a per-weight step over that state can have."""
    f = W.dtype.type(f)
    n = W.shape[1]
    for i0 in range(0, n, 256):
        for r in rows:
            row = W[r, i0:min(i0 + 256, n)]
            for i in range(row.shape[0]):
                row[i] *= f


def tuner_phase(n_actions=18, repeats=50, seed=0):
    """Print, per tuner, the median time of one `dense_step` (the tuner phase of a network step)
    on the Atari net in float32: hot (state in cache, the step repeated) and cold (after a 64 MB
    sweep), each next to the same for reading and writing every state row once (touch_rows)."""
    net = nets.ATARI(n_actions)
    rng = np.random.default_rng(seed)
    obs = [rng.random(net.obs_shape).astype(np.float32) for _ in range(2)]
    sweep = np.zeros(16 << 20, np.float32)
    print(f"Atari net, {net.n_params} weights, float32: median ms over {repeats} calls of the "
          f"tuner phase (dense_step) and of one read+write of its state rows")
    print(f"{'tuner':<8}{'rows':>5}{'hot':>8}{'floor':>8}{'cold':>8}{'floor':>8}")
    for tuner in NET_TUNERS:
        agent = mt.NetAgent(net, mt.Config(tuner=tuner, alpha=2.0 ** -8, mu=0.001, psi=0.01), seed)
        rr = agent.learner.rows()
        for t in range(8):                      # real steps: traces, h and factors not zero
            agent.learn(agent.policy(obs[t % 2]), 1.0, obs[(t + 1) % 2], 0.99)
        args = agent.learn_args(agent.policy(obs[0]), 1.0, obs[1], 0.99)
        mt.net_step(7, *args)                   # the gradients at S_t and S_{t+1}
        idx = np.array(rr, np.int64)
        calls = (lambda: mt.net_step(8, *args), lambda: touch_rows(agent.learner.W, idx, 1.0))
        med = []
        for cold in (False, True):
            for call in calls:
                med.append(np.median(timed(call, repeats,
                                           (lambda: sweep.__iadd__(1.0)) if cold else None)) * 1e3)
        print(f"{tuner:<8}{len(rr):>5}" + "".join(f"{m:>8.3f}" for m in med), flush=True)
