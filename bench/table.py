"""One table of every engine measured in a compare.sh run, with ratios and targets.

usage: table.py OUT_DIR AGGREGATE_PY
Runs the harness's aggregate.py first (it checks that every engine produced the
same workload statistics), then prints medians per engine as a Markdown table.
"""
import glob, json, os, re, statistics, subprocess, sys

out, aggregate = sys.argv[1], sys.argv[2]
check = subprocess.run([sys.executable, aggregate, out], capture_output=True, text=True)
sys.stderr.write(check.stdout + check.stderr)
consistent = check.returncode == 0

runs = {}
for jf in sorted(glob.glob(os.path.join(out, 'raw', '*.json'))):
    lines = [l for l in open(jf).read().splitlines() if l.startswith('{')]
    if not lines:
        continue
    r = json.loads(lines[-1])
    tf = jf[:-5] + '.time'
    if os.path.exists(tf):
        m = re.search(r'Maximum resident set size \(kbytes\): (\d+)', open(tf).read())
        r['rss_mb'] = int(m.group(1)) / 1024 if m else float('nan')
    runs.setdefault(r['peer'], []).append(r)

def med(rs, f):
    v = [f(r) for r in rs]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None

rows = {}
for peer, rs in runs.items():
    lat = lambda k: (lambda r: r['latency_us'][k] if 'latency_us' in r and k in r['latency_us'] else None)
    rows[peer] = {
        'runs': len(rs), 'n': rs[0]['n'],
        'tps': med(rs, lambda r: r['transitions_per_s']),
        'ips': med(rs, lambda r: r['instances_per_s']),
        'rps': med(rs, lambda r: r.get('requests_per_s')),
        'rss': med(rs, lambda r: r.get('rss_mb')),
        'p50': med(rs, lat('p50')), 'p99': med(rs, lat('p99')), 'p999': med(rs, lat('p999')),
        'disk': med(rs, lambda r: r['db_bytes'] / r['n'] if 'db_bytes' in r else None),
    }

def fmt(v, spec='{:,.0f}'):
    return '' if v is None else spec.format(v)

def ms(us):
    return '' if us is None else f'{us / 1000:.2f}'

order = sorted(rows, key=lambda p: (not p.startswith('flowform'), p))
print(f"N = {next(iter(rows.values()))['n'] if rows else '?'}; medians of runs; statistics identical across engines: {consistent}\n")
print('| engine | runs | transitions/s | instances/s | requests/s | p50 ms | p99 ms | p99.9 ms | peak RSS MB | bytes on disk / instance |')
print('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
for p in order:
    r = rows[p]
    print(f"| {p} | {r['runs']} | {fmt(r['tps'])} | {fmt(r['ips'])} | {fmt(r['rps'])} | {ms(r['p50'])} | {ms(r['p99'])} | {ms(r['p999'])} | {fmt(r['rss'], '{:.0f}')} | {fmt(r['disk'])} |")

def ratio(a, b):
    if a not in rows or b not in rows or not rows[b]['tps']:
        return None
    return rows[a]['tps'] / rows[b]['tps']

print('\n| comparison | ratio | target | met |')
print('|---|---:|---:|---|')
durable_many = next((p for p in order if p.startswith('flowform-durable-c') and p != 'flowform-durable-c1'), None)
http = next((p for p in order if re.fullmatch(r'flowform-http-c\d+', p)), None)
paced = next((p for p in order if p.startswith('flowform-http-') and p.endswith('rps')), None)
# The targets of the durable-path issue (#13): each ratio in one run.
checks = [
    ('core / xstate-mem (transitions/s)', ratio('flowform-core', 'xstate-mem'), 5),
    ('flowform-durable-c1 / xstate-sqlite FULL', ratio('flowform-durable-c1', 'xstate-sqlite'), 1.2),
    (f'{durable_many} / xstate-sqlite FULL', ratio(durable_many, 'xstate-sqlite') if durable_many else None, 15),
    (f'{durable_many} / xstate-sqlite NORMAL (not power-safe)', ratio(durable_many, 'xstate-sqlite-normal') if durable_many else None, 2),
]
for name, v, target in checks:
    if v is not None:
        print(f"| {name} | {v:.1f}× | ≥ {target}× | {'yes' if v >= target else 'no'} |")
if http:
    v = rows[http]['rps']
    print(f"| {http} requests/s | {v:,.0f} | ≥ 20,000 | {'yes' if v >= 20000 else 'no'} |")
if paced:
    v = rows[paced]['p99']
    print(f"| {paced} p99 (from the scheduled send time) | {v / 1000:.1f} ms | < 5 ms | {'yes' if v < 5000 else 'no'} |")
for p in order:
    if p.startswith('flowform-durable') and rows[p].get('disk'):
        v = rows[p]['disk']
        print(f"| {p} bytes on disk per work order | {v:,.0f} | ≤ 2,000 | {'yes' if v <= 2000 else 'no'} |")
sys.exit(0 if consistent else 1)
