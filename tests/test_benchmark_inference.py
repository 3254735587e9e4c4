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
    rows = {'whole': {'calendar': {'all_seconds': [10.0, 12.0, 11.0], 'page_faults': [5, 0, 7]},
                      'city': {'all_seconds': [5.0, 3.0, 4.0], 'page_faults': [1, 2, 3]}},
            bench.BASICSR: {'calendar': {'all_seconds': [9.0, 15.0, 13.0], 'page_faults': [0, 0, 0]},
                            'city': {'all_seconds': [6.0, 5.0, 2.0], 'page_faults': [9, 0, 0]}}}
    speed = bench.paired_speed(rows)
    assert speed['ours_page_faults'] == [6, 2, 10] and speed['basicsr_page_faults'] == [9, 0, 0]
    assert speed['ours_seconds'] == [15.0, 15.0, 15.0] and speed['basicsr_seconds'] == [15.0, 20.0, 15.0]
    assert speed['ratios'] == [1.0, 20.0 / 15.0, 1.0] and speed['median'] == 1.0
    out = capsys.readouterr().out
    assert 'median 1.000x, range 1.000-1.333x' in out and 'ours 6, BasicSR 0' in out


def test_a_failing_child_shows_its_own_error_and_stops_the_run(capfd):
    import pytest

    bench = _script()
    with pytest.raises(SystemExit, match=r'failed \(exit 2'):
        bench.child(['--child', 'no-such-part'])
    assert 'no-such-part' in capfd.readouterr().err  # the child's stderr reached ours (its progress lines do too)


def test_operator_census_lists_every_count_that_differs(capsys):
    bench = _script()
    ops = {bench.BASICSR: {'aten::conv': [10, 900.0], 'aten::add_': [6, 1.0], 'aten::cat': [4, 2.0]},
           'whole': {'aten::conv': [10, 950.0], 'aten::add': [6, 1.5], 'aten::cat': [4, 2.5]}}
    summary = bench.print_ops({'clip': 'calendar', 'frames': 3, 'ops': ops}, top=1)
    assert summary['differing_counts'] == {'aten::add_': [6, 0], 'aten::add': [0, 6]}
    assert summary['self_ms_total'] == {'basicsr': 903.0, 'ours': 954.0}
    table = capsys.readouterr().out
    assert '| aten::conv | 10 | 10 |' in table and '| aten::add_ | 6 | 0 |' in table  # top 1, then the differing
    assert 'aten::cat' not in table  # same count, outside the top: left out
