"""lrti_plugin.utils.host_memory: glibc keeps freed feature maps, so a recurrent pass stops faulting them in."""
import os
import subprocess
import sys

import pytest

from lrti_plugin.utils import host_memory

# A few recurrent steps of a 64-channel convolution on a Vid4-sized frame, five times over; prints
# whether the settings were applied and the minor page faults of the last four rounds.
CHURN = """
import resource, sys, torch
from lrti_plugin.utils.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == 'keep' else False
torch.manual_seed(0)
conv = torch.nn.Conv2d(67, 64, 3, padding=1)
x = torch.randn(1, 3, 144, 180)
def churn():
    h = torch.zeros(1, 64, 144, 180)
    with torch.no_grad():
        for _ in range(4):
            h = torch.relu(conv(torch.cat([x, h], 1)))
churn()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    churn()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(how, **env):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}, 'OMP_NUM_THREADS': '1', **env}
    out = subprocess.run([sys.executable, '-c', CHURN, how], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == 'True', int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt: Linux only')
def test_kept_memory_is_not_faulted_in_again():
    applied, kept = _faults('keep')
    if not applied:
        pytest.skip('no glibc mallopt here')
    _, default = _faults('default')
    assert default > 10000, default  # the default gives every new feature map back and faults it in again
    assert kept * 10 < default, (kept, default)


def test_off_by_variable_and_when_the_user_tunes_malloc(monkeypatch):
    monkeypatch.setenv(host_memory.DISABLE, '0')
    assert host_memory.keep_freed_memory() is False
    monkeypatch.delenv(host_memory.DISABLE)
    monkeypatch.setenv('MALLOC_TOP_PAD_', '1')
    assert host_memory.keep_freed_memory() is False
    assert _faults('keep', LRTI_KEEP_FREED_MEMORY='0')[0] is False
