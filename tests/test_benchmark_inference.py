"""scripts/benchmark_inference.py: the round-by-round speed of our whole pass against BasicSR's."""
import importlib.util

from conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location('benchmark_inference', REPO / 'scripts' / 'benchmark_inference.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_speed_pairs_the_rounds_and_sums_the_clips(capsys):
    bench = _script()
    rows = {'whole': {'calendar': {'all_seconds': [10.0, 12.0, 11.0]}, 'city': {'all_seconds': [5.0, 3.0, 4.0]}},
            bench.BASICSR: {'calendar': {'all_seconds': [9.0, 15.0, 13.0]}, 'city': {'all_seconds': [6.0, 5.0, 2.0]}}}
    speed = bench.paired_speed(rows)
    assert speed['ours_seconds'] == [15.0, 15.0, 15.0] and speed['basicsr_seconds'] == [15.0, 20.0, 15.0]
    assert speed['ratios'] == [1.0, 20.0 / 15.0, 1.0] and speed['median'] == 1.0
    assert 'median 1.000x, range 1.000-1.333x' in capsys.readouterr().out
