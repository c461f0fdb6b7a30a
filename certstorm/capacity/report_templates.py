"""The report's two renderings of one list of sections (see :func:`certstorm.capacity.report.sections`):
``report.html`` (autoescaped, plots inlined) and ``report.md``."""

from __future__ import annotations

import jinja2

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>certstorm run {{ run_id }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222;line-height:1.4}
h1{font-size:1.5em}
.headline{font-size:1.15em;font-weight:bold;padding:.6em;border-left:5px solid #c60;background:#fff6ec}
.note{color:#7a4a00}table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
caption{text-align:left;font-weight:bold;padding:.3em 0}img{max-width:100%}
</style></head><body>
<h1>certstorm run {{ run_id }}</h1>
<p class="headline">{{ headline }}</p>
{% for note in notes %}<p class="note">{{ note }}</p>
{% endfor %}
{% for s in sections %}<h2 id="{{ s.id }}">{{ s.title }}</h2>
{% for block in s.blocks %}{% if block.kind == "text" %}<p>{{ block.text }}</p>
{% elif block.kind == "list" %}<ul>{% for item in block["items"] %}<li>{{ item }}</li>{% endfor %}</ul>
{% elif block.kind == "table" %}<table><caption>{{ block.title }}</caption>
<tr>{% for h in block.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in block.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% elif block.kind == "image" %}<img alt="{{ block.alt }}" src="{{ images[block.name] }}">
{% endif %}{% endfor %}{% endfor %}
</body></html>
"""

MARKDOWN = """# certstorm run {{ run_id }}

**{{ headline }}**
{% for note in notes %}
> {{ note }}
{% endfor %}
{% for s in sections %}
## {{ s.title }}
{% for block in s.blocks %}
{% if block.kind == "text" %}{{ block.text }}
{% elif block.kind == "list" %}{% for item in block["items"] %}- {{ item }}
{% endfor %}{% elif block.kind == "table" %}*{{ block.title }}*

| {{ block.header | join(" | ") }} |
|{% for h in block.header %}---|{% endfor %}
{% for row in block.rows %}| {{ row | join(" | ") }} |
{% endfor %}{% elif block.kind == "image" %}![{{ block.alt }}](plots/{{ block.name }}.png)
{% endif %}{% endfor %}{% endfor %}"""

html_template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(HTML)
markdown_template = jinja2.Environment(
    autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
).from_string(MARKDOWN)


__all__ = ["HTML", "MARKDOWN", "html_template", "markdown_template"]
