"""One self-contained report.html per run: plots inlined as base64, metrics, data report, config."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ s.recipe.name }}: training report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
pre{background:#f6f6f6;padding:1rem;overflow:auto;font-size:.85rem}.kpi{font-size:1.4rem;margin-right:2rem}
</style></head><body>
<h1>{{ s.recipe.name }}</h1>
<p>{{ s.recipe.task }} &middot; {{ s.recipe.model.family }}
{% set m = s.recipe.model %}<code>{{ m.path or m.name or (m.architecture_config.model_type ~ " from scratch") }}</code>
&middot; {{ s.labels|length }} classes &middot; trained {{ "%.0f"|format(s.train.seconds) }} s on {{ s.train.device }}
({{ s.train.world_size }} process{{ "es" if s.train.world_size > 1 else "" }}), {{ s.train.steps }} steps,
{{ "%.1f"|format(s.train.samples_per_second) }} samples/s{% if s.smoke %} &middot; <b>smoke run</b>{% endif %}</p>
{% set p = s.model.parameters %}<p>Trainable parameters <b>{{ "{:,}".format(p.trainable) }}</b> of
{{ "{:,}".format(p.total) }} ({{ "%.2f"|format(100 * p.trainable / p.total) }} %){% if s.model.lora %}
&middot; LoRA r={{ s.model.lora.r }} on {{ s.model.lora.target_modules|join(", ") }} (merged for export,
max |merged &minus; adapters| {{ "%.1e"|format(s.model.lora.merge_max_abs_diff) }}){% endif %}
&middot; peak memory <b>{{ "%.0f"|format(s.train.peak_memory_mb) }} MiB</b> ({{ s.train.peak_memory_source }})
&middot; {{ s.train.precision }}{% if s.train.gradient_checkpointing %}, gradient checkpointing{% endif %}
&middot; effective batch {{ s.train.effective_batch_size }} ({{ s.train.accumulation_steps }} accumulation
step{{ "s" if s.train.accumulation_steps > 1 else "" }})</p>
<p><span class="kpi">test accuracy <b>{{ "%.2f"|format(100 * s.test.accuracy) }} %</b></span>
<span class="kpi">macro-F1 <b>{{ "%.3f"|format(s.test.macro_f1) }}</b></span>
<span class="kpi">ECE <b>{{ "%.3f"|format(s.test.ece) }}</b></span></p>
<h2>Training curves</h2>{{ img("curves.png") }}
<h2>Test set</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{% for name, m in s.test.per_class.items() %}<tr><td>{{ name }}</td><td>{{ "%.3f"|format(m.precision) }}</td>
<td>{{ "%.3f"|format(m.recall) }}</td><td>{{ "%.3f"|format(m.f1) }}</td><td>{{ m.support }}</td></tr>{% endfor %}
</table>
{{ img("confusion_matrix.png") }}{{ img("reliability.png") }}
<h2>Sample predictions</h2>{{ img("samples.png") }}
<h2>Data</h2>
<table><tr><th>split</th>{% for l in s.labels %}<th>{{ l }}</th>{% endfor %}<th>total</th></tr>
{% for split, counts in s.data.class_counts.items() %}<tr><td>{{ split }}</td>
{% for l in s.labels %}<td>{{ counts[l] }}</td>{% endfor %}
<td>{{ counts.values()|sum }}</td></tr>{% endfor %}</table>
<table><tr><th>split</th><th>read</th><th>dropped (by reason)</th></tr>
{% for split in s.data.class_counts %}<tr><td>{{ split }}</td>
<td>{{ s.data.read.get(split, "(split from train)") }}</td>
<td>{% for r, n in s.data.dropped.get(split, {}).items() %}{{ r }}: {{ n }} {% else %}none{% endfor %}</td></tr>
{% endfor %}</table>
<p>Sources: {% for split, src in s.data.sources.items() %}<code>{{ split }}={{ src }}</code> {% endfor %}</p>
<h2>Resolved config</h2><pre>{{ config }}</pre>
</body></html>
"""


def write_report_html(run_dir: Path, summary: dict[str, Any], config_text: str) -> Path:
    def img(name: str) -> str:
        path = run_dir / name
        if not path.exists():
            return ""
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{name}" src="data:image/png;base64,{data}">'

    env = jinja2.Environment(autoescape=jinja2.select_autoescape(default=True, default_for_string=True))
    html = env.from_string(TEMPLATE).render(
        s=json.loads(json.dumps(summary)), config=config_text, img=lambda n: Markup(img(n))
    )
    target = run_dir / "report.html"
    target.write_text(html)
    return target
