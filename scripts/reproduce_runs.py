"""The runs half of ``scripts/reproduce.py``: train one run in a child process (recording its wall time and peak
memory in ``campaign.json``), read its BasicSR logs, and export a campaign's finished runs without their weights."""
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime

from reproduce_eval import CampaignError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class State:
    """``campaign.json``: per run, the training segments (wall time, peak RSS, exit status)."""

    def __init__(self, path: str):
        self.path = path
        self.data = {'runs': {}}
        if os.path.isfile(path):
            with open(path) as f:
                self.data = json.load(f)

    def run(self, name: str) -> dict:
        return self.data['runs'].setdefault(name, {'segments': []})

    def save(self) -> None:
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)


def machine_name() -> str:
    """The CPU model, core count and boot of this machine, recorded with each training segment: wall times and
    costs compare only between runs on the same machine (a campaign continued across sessions may change machines,
    and virtual machines of different speed can report the same CPU model, so the boot id tells them apart)."""
    def first_line(path, prefix=''):
        try:
            with open(path) as f:
                return next((line.split(':', 1)[-1].strip() for line in f if line.startswith(prefix)), '')
        except OSError:
            return ''

    model = first_line('/proc/cpuinfo', 'model name') or platform.processor() or platform.machine()
    boot = first_line('/proc/sys/kernel/random/boot_id')[:8]
    return f'{model}, {os.cpu_count()} cores' + (f', boot {boot}' if boot else '')


def experiment_dir(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, 'experiments', name)


def latest_iter(exp_dir: str) -> int:
    states = os.path.join(exp_dir, 'training_states')
    if not os.path.isdir(states):
        return 0
    iters = [int(f[:-6]) for f in os.listdir(states) if f.endswith('.state') and f[:-6].isdigit()]
    return max(iters, default=0)


def _vm_hwm_mib(pid: int):
    """The peak resident set of process ``pid`` since its ``exec`` (``VmHWM``), or None where unreadable."""
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def wait_with_peak_rss(proc, interval: float = 0.5) -> tuple:
    """Wait for ``proc``; return ``(wait status, peak RSS in MiB, how it was measured)``.

    The peak is the child's own high-water mark (``VmHWM``), read every ``interval`` seconds while it runs (it only
    grows, so the last reading misses at most the last ``interval``). ``os.wait4``'s ``ru_maxrss`` is only the
    fallback where ``/proc`` is missing: Linux carries the parent's high-water mark into a child at ``exec``, so
    once this runner has scored a run in-process (a whole Vid4 pass: gigabytes), every later child would report at
    least the runner's own peak.
    """
    peak = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        hwm = _vm_hwm_mib(proc.pid)
        if hwm is not None:
            peak = hwm if peak is None else max(peak, hwm)
        time.sleep(interval)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if peak is None:
        return status, usage.ru_maxrss / 1024.0, 'ru_maxrss'
    return status, peak, 'VmHWM'


def train_run(run_dir: str, opt: dict, record: dict, state: State, threads) -> None:
    """Train (or continue) one run in a child process; appends a segment to ``record``."""
    from lrti_plugin.utils.options import dump_options

    os.makedirs(run_dir, exist_ok=True)
    opt_path = dump_options(opt, os.path.join(run_dir, 'train.yml'))
    exp = experiment_dir(run_dir, opt['name'])
    start_iter = latest_iter(exp)
    cmd = [sys.executable, '-m', 'lrti_plugin.train', '-opt', opt_path, '--auto_resume']
    env = {**os.environ, 'PYTHONPATH': REPO + os.pathsep + os.environ.get('PYTHONPATH', '')}
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    log_path = os.path.join(run_dir, 'runner.log')
    print(f'[reproduce] {opt["name"]}: training from iter {start_iter} (log: {log_path})', flush=True)
    t0 = time.time()
    with open(log_path, 'a') as log:
        proc = subprocess.Popen(cmd, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            status, peak_rss, rss_method = wait_with_peak_rss(proc)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    code = os.waitstatus_to_exitcode(status)
    record['segments'].append({'start_iter': start_iter, 'end_iter': latest_iter(exp), 'wall_s': time.time() - t0,
                               'peak_rss_mib': peak_rss, 'rss_method': rss_method, 'exit': code,
                               'machine': machine_name(),
                               'ended': datetime.now().isoformat(timespec='seconds')})
    state.save()
    if code != 0:
        tail = open(log_path).read().strip().splitlines()[-3:]
        raise CampaignError(f'run {opt["name"]} failed (exit {code}); see {log_path}: {" | ".join(tail)}')


def parse_logs(exp_dir: str) -> tuple:
    """(validation points, training wall seconds) from every BasicSR log of a run.

    A point is ``{'iter', 'wall_s', 'metrics': {name: value}}``. Wall time counts each log (one per
    training segment, killed ones included) from its first to its last line, so the time between a kill
    and the resume is not counted; it includes the validations and checkpoint writes of the run.
    """
    import re

    stamp = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})')
    it_re = re.compile(r'iter:\s*([\d,]+)')
    val_re = re.compile(r'# (\w+): ([-\d.]+)')
    logs = sorted(f for f in os.listdir(exp_dir) if f.startswith('train_') and f.endswith('.log'))
    points, offset = [], 0.0
    for log in logs:
        first = last = None
        it, pending = 0, None
        with open(os.path.join(exp_dir, log)) as f:
            for line in f:
                m = stamp.match(line)
                if m:
                    t = datetime.strptime(m.group(1), '%Y-%m-%d %H:%M:%S').timestamp() + int(m.group(2)) / 1000
                    first = t if first is None else first
                    last = t
                    if 'Validation' in line:
                        pending = {'iter': it, 'wall_s': offset + t - first, 'metrics': {}}
                        points.append(pending)
                    mi = it_re.search(line)
                    if mi and 'eta' in line:
                        it = int(mi.group(1).replace(',', ''))
                    continue
                mv = val_re.search(line)
                if mv and pending is not None:
                    pending['metrics'].setdefault(mv.group(1), float(mv.group(2)))
        if first is not None:
            offset += last - first
    # BasicSR validates again after the last iteration: keep one point per iteration (the first).
    unique = {}
    for p in points:
        if p['metrics']:
            unique.setdefault(p['iter'], p)
    return list(unique.values()), offset


def is_scored(run_dir: str, tests) -> bool:
    """Scored on every test set: a finished run, also where only its small files were kept (no weights)."""
    return bool(tests) and all(os.path.isfile(os.path.join(run_dir, f'eval_{t}.json')) for t in tests)


def export_campaign(out: str, dest: str, tests) -> list:
    """Copy what a campaign's results need to be read and continued, without weights or training states.

    ``dest`` gets the report (``report.md``, ``report.json``, the plots); ``dest/runs`` gets ``campaign.json``
    and, of every run scored on every test set (and the reference), its scores, options and logs: the runner
    counts such a folder's runs as done when it is copied back under ``--out``. Unfinished runs are left out.
    Returns the copied paths, relative to ``dest``.
    """
    import shutil

    copied = []

    def put(src, rel):
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))
        copied.append(rel)

    finished = []
    for name in sorted(os.listdir(out)):
        src = os.path.join(out, name)
        if os.path.isfile(src) and (name in ('report.md', 'report.json') or name.endswith('.png')):
            put(src, name)
        elif os.path.isdir(src) and is_scored(src, tests):
            finished.append(name)
            for root, dirs, files in os.walk(src):
                dirs[:] = [d for d in dirs if d not in ('models', 'training_states', 'visualization', 'tb_logger')]
                for f in files:
                    if f.endswith(('.json', '.log', '.yml')):
                        rel = os.path.normpath(os.path.join('runs', name, os.path.relpath(root, src), f))
                        put(os.path.join(root, f), rel)
    state = os.path.join(out, 'campaign.json')
    if os.path.isfile(state):  # the segments of the exported runs only: an unfinished run starts afresh from it
        with open(state) as f:
            data = json.load(f)
        data['runs'] = {k: v for k, v in data.get('runs', {}).items() if k in finished}
        os.makedirs(os.path.join(dest, 'runs'), exist_ok=True)
        with open(os.path.join(dest, 'runs', 'campaign.json'), 'w') as f:
            json.dump(data, f, indent=1)
        copied.append(os.path.join('runs', 'campaign.json'))
    return copied
