"""`depth-ego weights`: the model zoo (released monodepth2 / PackNet-SfM weights, ImageNet
ResNets) -- list, fetch, path, remove, import."""
from __future__ import annotations

import argparse
import json
import sys

HELP = 'list / download / import released model weights (the model zoo)'
DESCRIPTION = """\
Released weights by name, cached in $DEPTH_EGO_HOME (else $XDG_CACHE_HOME/depth_ego_ros, else
~/.cache/depth_ego_ros). A fetched name works wherever a checkpoint is taken: the node's
`checkpoint` parameter and launch argument, predict/evaluate/export --checkpoint, train --init.

  depth-ego weights list                       # the models, their figures and licences
  depth-ego weights fetch mono_640x192         # download, verify the checksum, unpack
  depth-ego weights path mono_640x192          # where it is
  depth-ego weights import ~/Downloads/mono_640x192.zip --name mono_640x192   # offline machine
  depth-ego weights remove mono_640x192

monodepth2's weights are licensed for NON-COMMERCIAL use only (see `list`).
DEPTH_EGO_ZOO_REGISTRY=FILE (or --registry FILE) uses another registry file (a mirror).
"""


def add_parser(subparsers):
    p = subparsers.add_parser('weights', help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--registry', metavar='FILE', help='registry JSON to use instead of the '
                   'packaged one (default: $DEPTH_EGO_ZOO_REGISTRY, else the packaged registry)')
    sub = p.add_subparsers(dest='action', metavar='ACTION')
    s = sub.add_parser('list', help='models, resolution, data, published KITTI figures, licence, cached?')
    s.add_argument('--json', action='store_true', help='machine-readable output')
    s = sub.add_parser('fetch', help='download, verify, unpack and convert models')
    s.add_argument('names', nargs='+', metavar='NAME')
    s.add_argument('--force', action='store_true', help='download again even when cached')
    s.add_argument('--quiet', action='store_true', help='no progress bar')
    s = sub.add_parser('path', help='print the directory of a cached model')
    s.add_argument('name', metavar='NAME')
    s = sub.add_parser('remove', help='delete a cached model')
    s.add_argument('names', nargs='+', metavar='NAME')
    s = sub.add_parser('import', help='install a zip / directory / .ckpt / .pth downloaded '
                       'elsewhere (checksum verified for registry names)')
    s.add_argument('source', metavar='FILE_OR_DIR')
    s.add_argument('--name', required=True, help='the name to install it as (a registry name '
                   'gets its published checksum checked)')
    s.add_argument('--force', action='store_true', help='replace an installed model of that name')
    p.set_defaults(func=run, parser=p)
    return p


def _short_licence(e) -> str:
    if e.non_commercial:
        return 'NON-COMMERCIAL'
    return e.licence.split(' ')[0]


def _rows(reg):
    from ..zoo import installed_path, models_dir
    from ..zoo.registry import Entry
    rows = []
    extra = {}                       # models imported under names of their own
    if models_dir().is_dir():
        for d in sorted(models_dir().iterdir()):
            if d.name not in reg and installed_path(d.name) is not None:
                extra[d.name] = Entry(name=d.name, kind='checkpoint', method='imported',
                                      model='?', url='', format='monodepth2_zip',
                                      licence='unknown (imported)')
    reg = {**reg, **extra}
    for e in reg.values():
        m = e.metrics or {}
        d = installed_path(e.name)
        size = (sum(f.stat().st_size for f in d.iterdir() if f.is_file()) / 1e6 if d else None)
        rows.append({
            'name': e.name, 'method': e.method, 'model': e.model, 'kind': e.kind,
            'resolution': f'{e.width}x{e.height}' if e.width else '',
            'data': e.data, 'training': e.training,
            'benchmark': m.get('benchmark'), 'abs_rel': m.get('abs_rel'), 'delta1': m.get('delta1'),
            'size_mb': round(size, 1) if size is not None else e.approx_size_mb,
            'size_is_estimate': size is None, 'licence': e.licence,
            'stereo_scale_factor': e.stereo_scale_factor, 'supported': e.supported,
            'cached': str(d) if d else None, 'note': e.note, '_entry': e})
    return rows


def _list(reg, as_json: bool) -> int:
    rows = _rows(reg)
    entries = [r.pop('_entry') for r in rows]
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    head = ('name', 'method', 'res', 'data', 'AbsRel', 'd<1.25', 'size', 'licence', 'cached')
    table = []
    for r, e in zip(rows, entries):
        bench = '' if r['benchmark'] in (None, 'KITTI Eigen') else f' ({r["benchmark"]})'
        size = r['size_mb']
        table.append((
            r['name'] + ('' if e.supported else ' (unsupported)'),
            r['method'] + ('' if r['model'] in ('resnet18', '?') or e.kind == 'imagenet' else f' {r["model"]}'),
            r['resolution'] if e.kind == 'checkpoint' else '-',
            r['data'] + (', ' + r['training'] if r['training'] else ''),
            (f'{r["abs_rel"]:.3f}{bench}' if r['abs_rel'] is not None else '-'),
            (f'{r["delta1"]:.3f}' if r['delta1'] is not None else '-'),
            ('~' if r['size_is_estimate'] else '') + (f'{size:.0f} MB' if size else '?'),
            _short_licence(e), 'yes' if r['cached'] else 'no'))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
    fmt = '  '.join(f'{{:<{w}}}' for w in widths)
    print(fmt.format(*head))
    for t in table:
        print(fmt.format(*t))
    print('\nAbsRel / d<1.25: as published by the authors (KITTI Eigen test split unless named; '
          'monodepth2 mono models median-scaled, stereo ones x5.4). stereo / mono+stereo models '
          'record their 5.4 stereo scale factor: scale.mode fixed then gives metres.\n'
          'NON-COMMERCIAL: monodepth2 licence (Niantic), non-commercial use only. '
          '~size: estimated download size.')
    return 0


def run(args) -> int:
    from ..zoo import ZooError, fetch, import_model, installed_path, load_registry, remove
    if not args.action:
        args.parser.print_help()
        return 2
    try:
        reg = load_registry(args.registry)
        if args.action == 'list':
            return _list(reg, args.json)
        if args.action == 'fetch':
            rc = 0
            for name in args.names:
                try:
                    have = installed_path(name) if not args.force else None
                    d = fetch(name, force=args.force, progress=not args.quiet, registry=reg,
                              log=lambda s: print(s, file=sys.stderr))
                    e = reg[name]
                    if have is None and e.non_commercial:
                        print(f'{name}: licence: {e.licence}', file=sys.stderr)
                    print(d)
                except ZooError as exc:
                    print(f'depth-ego weights fetch: error: {exc}', file=sys.stderr)
                    rc = 1
            return rc
        if args.action == 'path':
            d = installed_path(args.name)
            if d is None:
                from ..zoo import resolve_checkpoint
                kind = reg[args.name].kind if args.name in reg else 'checkpoint'
                resolve_checkpoint(args.name, registry=reg, kind=kind)   # raises the right message
            print(d)
            return 0
        if args.action == 'remove':
            for name in args.names:
                print(f'removed {remove(name)}')
            return 0
        if args.action == 'import':
            print(import_model(args.source, args.name, registry=reg, force=args.force))
            return 0
    except ZooError as exc:
        print(f'depth-ego weights {args.action}: error: {exc}', file=sys.stderr)
        return 1
    return 2
