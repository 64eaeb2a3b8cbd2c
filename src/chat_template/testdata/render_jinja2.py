#!/usr/bin/env python3
"""Reference renderer for the chat_template differential test.

Renders each case exactly as HF transformers' apply_chat_template does (transformers
utils/chat_template_utils.py): ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[loopcontrols]), a tojson filter that is json.dumps(ensure_ascii=False, ...),
raise_exception and strftime_now globals. strftime_now uses the case's fixed "now" (UTC epoch
seconds) so runs are deterministic.

Usage: render_jinja2.py CASES.json  -> prints a JSON list of results to stdout.
CASES.json: [{"template": str, "context": {...}, "now": int}, ...]
Result: {"ok": true, "output": str} | {"ok": false, "raised": bool, "error": str}
"""
import json
import sys
from datetime import datetime, timezone

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


class RaisedByTemplate(jinja2.exceptions.TemplateError):
    pass


def raise_exception(message):
    raise RaisedByTemplate(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    compiled = {}
    results = []
    for case in cases:
        now = case.get("now", 0)
        env_key = case["template"]
        try:
            if env_key not in compiled:
                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                    extensions=[jinja2.ext.loopcontrols])
                env.filters["tojson"] = tojson
                env.globals["raise_exception"] = raise_exception
                compiled[env_key] = (env, env.from_string(case["template"]))
            env, template = compiled[env_key]
            env.globals["strftime_now"] = (
                lambda fmt, _now=now: datetime.fromtimestamp(_now, tz=timezone.utc).strftime(fmt))
            results.append({"ok": True, "output": template.render(**case["context"])})
        except RaisedByTemplate as e:
            results.append({"ok": False, "raised": True, "error": str(e.message)})
        except Exception as e:  # noqa: BLE001 - any Jinja failure is a result to compare
            results.append({"ok": False, "raised": False, "error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
