"""A real two-node Ray cluster on one machine: two network namespaces joined by a veth pair, a
head node in one and a worker node in the other, each knowing the other only by its private
address.  A sweep runs across both and must equal the process pool's byte for byte; it must
survive the worker node's loss (SIGKILL of every process in its namespace) with no run lost; and
a client without the cluster's token is refused.  Skipped where the system refuses namespaces
(they need root)."""
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
HEAD_IP, WORKER_IP, PORT = "10.77.0.1", "10.77.0.2", 6390
GRID = ["--domain", "CartPole-v1", "--tuner", "obgd,mixed", "--seeds", "3", "--steps", "40000",
        "--checkpoint-every", "5"]


def _ip(*args):
    """Run `ip ARGS`; CalledProcessError if refused."""
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _pids(ns):
    """The processes in network namespace ns."""
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30)
    return [int(p) for p in r.stdout.split()]


def _kill_all(ns):
    """SIGKILL every process in network namespace ns; -> how many there were."""
    pids = _pids(ns)
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return len(pids)


class Cluster:
    """Head node in namespace `head`, worker node in `worker`, token authentication on."""

    def __init__(self, tag):
        self.head, self.worker = f"mth{tag}", f"mtw{tag}"
        self.token = secrets.token_hex(32)
        self.tmp = tempfile.mkdtemp(prefix="mtr", dir="/tmp")   # Ray's socket paths stay short

    def env(self, token=None):
        """The environment of a process that should reach the cluster (token: the one it holds)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token if token is None else token,
                   RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=ROOT)
        return env

    def run(self, ns, cmd, token=None, **kw):
        """cmd inside namespace ns, to completion, holding `token` (default the cluster's)."""
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], env=self.env(token),
                              capture_output=True, text=True, **kw)

    def popen(self, ns, cmd):
        """cmd inside namespace ns, started in the background, holding the cluster's token."""
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def network(self):
        """The two namespaces and the veth pair between them (CalledProcessError if refused)."""
        for ns in (self.head, self.worker):
            _ip("netns", "add", ns)
        _ip("link", "add", f"{self.head}v", "type", "veth", "peer", "name", f"{self.worker}v")
        for ns, ip in ((self.head, HEAD_IP), (self.worker, WORKER_IP)):
            _ip("link", "set", f"{ns}v", "netns", ns)
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", f"{ns}v")
            _ip("-n", ns, "link", "set", f"{ns}v", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def up(self, workers=True):
        """Start the head node and, if `workers`, the worker node (one CPU each)."""
        common = ["--num-cpus", "1", "--object-store-memory", str(100 << 20),
                  "--disable-usage-stats"]
        r = self.run(self.head, [RAY, "start", "--head", "--node-ip-address", HEAD_IP, "--port",
                                 str(PORT), "--include-dashboard", "false", "--temp-dir",
                                 self.tmp, *common], timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        if workers:
            self.join_worker(common)
        return self

    def join_worker(self, common):
        """Start the worker node and wait until the head sees two live nodes."""
        r = self.run(self.worker, [RAY, "start", "--address", f"{HEAD_IP}:{PORT}",
                                   "--node-ip-address", WORKER_IP, *common], timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.alive_nodes() == 2:
                return
            time.sleep(1)
        raise AssertionError("the worker node did not join")

    def nodes(self):
        """{node IP: node id} of the cluster's live nodes."""
        r = self.run(self.head, [sys.executable, "-c", "import json, ray; ray.init(address="
                                 "'auto', logging_level='ERROR'); print(json.dumps({n["
                                 "'NodeManagerAddress']: n['NodeID'] for n in ray.nodes() "
                                 "if n['Alive']}))"], timeout=60)
        return json.loads(r.stdout.splitlines()[-1]) if r.returncode == 0 and r.stdout else {}

    def alive_nodes(self):
        """How many nodes the cluster counts alive."""
        return len(self.nodes())

    def down(self):
        """Kill every process of both nodes and remove the namespaces (and so the veth pair)."""
        for ns in (self.worker, self.head):
            _kill_all(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def cluster():
    pytest.importorskip("ray")
    if not shutil.which("ip") or not os.path.exists(RAY):
        pytest.skip("needs the ip command and Ray's command line")
    c = Cluster(os.getpid() % 100000)
    try:
        try:
            c.network()
        except subprocess.CalledProcessError as e:
            pytest.skip(f"the system refuses network namespaces or veth pairs "
                        f"({e.stderr.strip()[:80]})")
        yield c
    finally:
        c.down()


def _sweep(out, extra):
    """The sweep command of GRID into `out`, with `extra` flags."""
    return [sys.executable, os.path.join(ROOT, "run.py"), "sweep", *GRID, "--quiet", "--out",
            str(out), *extra]


def _episodes(root):
    """Run directory name -> the bytes of its episodes.csv, for every run of a sweep."""
    return {os.path.basename(os.path.dirname(p)): open(p, "rb").read()
            for p in glob.glob(os.path.join(str(root), "*", "episodes.csv"))}


def _nodes(root):
    """Run directory name -> the Ray node id its run recorded (None: not run on Ray)."""
    return {os.path.basename(os.path.dirname(p)): json.load(open(p))["provenance"]["ray_node"]
            for p in glob.glob(os.path.join(str(root), "*", "config.json"))}


@pytest.fixture(scope="module")
def pool_sweep(tmp_path_factory):
    """GRID on the process pool: the reference every cluster sweep must equal."""
    out = tmp_path_factory.mktemp("pool") / "sweep"
    r = subprocess.run(_sweep(out, ["--workers", "2"]), capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = _episodes(out)
    assert len(runs) == 6
    return runs


@pytest.mark.slow
def test_two_node_sweep_spreads_and_equals_the_pool(cluster, pool_sweep, tmp_path):
    cluster.up()
    out = tmp_path / "ray"
    r = cluster.run(cluster.head, _sweep(out, ["--ray", f"{HEAD_IP}:{PORT}"]), timeout=900,
                    cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _episodes(out) == pool_sweep                       # 6 of 6 byte-identical
    assert len(set(_nodes(out).values()) - {None}) == 2       # both nodes ran runs


@pytest.mark.slow
def test_sweep_survives_losing_the_worker_node(cluster, pool_sweep, tmp_path):
    cluster.up()
    out = tmp_path / "ray"
    worker = cluster.nodes()[WORKER_IP]
    sweep = cluster.popen(cluster.head, _sweep(out, ["--ray", f"{HEAD_IP}:{PORT}"]))
    killed, deadline = 0, time.monotonic() + 300
    while time.monotonic() < deadline and sweep.poll() is None:
        mid = [d for d, n in _nodes(out).items()              # a run of the worker node's
               if n == worker and os.path.exists(out / d / "checkpoint.npz")]   # past a checkpoint
        if mid:
            killed = _kill_all(cluster.worker)
            break
        time.sleep(0.1)
    stdout, stderr = sweep.communicate(timeout=900)
    assert killed > 0, "the worker node never reached a checkpoint"
    assert sweep.returncode == 0, stderr[-2000:]
    assert _episodes(out) == pool_sweep                       # no run lost, every one identical
    resumed = [d for d in _nodes(out)
               if "resumed_from_episode" in json.load(open(out / d / "config.json"))]
    assert mid[0] in resumed                                  # from its checkpoint, on the head


def test_client_without_the_token_is_refused(cluster, tmp_path):
    cluster.up(workers=False)
    for token in ("", secrets.token_hex(32)):                 # none, and a wrong one
        r = cluster.run(cluster.head, _sweep(tmp_path / f"t{len(token)}",
                                              ["--ray", f"{HEAD_IP}:{PORT}"]),
                        token=token, timeout=120, cwd=ROOT)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "token" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / f"t{len(token)}").exists()
