"""Read, adjust and write BasicSR option files without losing the plugin-loading tag."""
from typing import Any, Mapping

import yaml

PLUGIN_LINE = 'plugin: !!python/name:lrti_plugin.__version__\n'


def load_options(path: str) -> dict:
    """Load a YAML options file the way BasicSR's ``parse_options`` does (ordered, python tags resolved)."""
    from basicsr.utils.options import ordered_yaml

    with open(path) as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    if not isinstance(opt, dict):
        raise ValueError(f'{path}: expected a mapping of options at the top level')
    return opt


def set_option(opt: dict, dotted: str, value: Any) -> None:
    """Set ``opt['a']['b'] = value`` for ``dotted = 'a.b'``; every parent key must exist."""
    node = opt
    *parents, last = dotted.split('.')
    for i, key in enumerate(parents):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f'option {".".join(parents[:i + 1])!r} does not exist (setting {dotted!r})')
        node = node[key]
    node[last] = value


def apply_overrides(opt: dict, overrides: Mapping[str, Any]) -> dict:
    """Apply ``{dotted key: value}`` overrides in place and return ``opt``."""
    for dotted, value in overrides.items():
        set_option(opt, dotted, value)
    return opt


def dump_options(opt: dict, path: str) -> str:
    """Write ``opt`` as YAML with the ``plugin`` tag first, so BasicSR's own runner imports the plugin."""
    from basicsr.utils.options import ordered_yaml

    body = {k: v for k, v in opt.items() if k != 'plugin'}
    with open(path, 'w') as f:
        f.write(PLUGIN_LINE)
        yaml.dump(body, f, Dumper=ordered_yaml()[1], default_flow_style=False, sort_keys=False)
    return path
