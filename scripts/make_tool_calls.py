#!/usr/bin/env python
"""Write the tool-calling conversations recipes/smollm2-tool-calls.yml trains on, and prove they are not
BFCL's.

Every row is one turn: the tools offered (in the system message, exactly as Lathe's evaluation offers
BFCL's functions to a template with no place for tools: `bfcl.tools_system_message`), a user request,
and the answer: one `<tool_call>` block per call, or a plain sentence when no offered function fits.
Four kinds, as BFCL's single-turn categories are:

- simple: one function offered, one call;
- multiple: three or four offered, one of them called;
- parallel: one function offered, called two or three times in one answer;
- irrelevance: functions offered that do not fit the request, and no call: a request another function
  here would serve, one on the offered function's own topic asking, with arguments, for an operation it
  does not do, or a question.

The functions, argument types and phrasings (scripts/tool_call_catalogue.py) are Lathe's own (household,
travel, hobby and office errands); none is BFCL's. `--check` (run by the tests) compares them with every BFCL data file in the
installed bfcl-eval: no function name in common, no user request sharing a run of 6 words with a BFCL
question. Deterministic for a seed:

    .venv/bin/python scripts/make_tool_calls.py [--rows 260] [--seed 4] [--out recipes/data/tool_calls.jsonl]
    .venv/bin/python scripts/make_tool_calls.py --check
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.evaluation.benchmarks import bfcl
from scripts.tool_call_catalogue import (
    FUNCTIONS,
    GENERAL,
    JOINS,
    JOINS3,
    NEAR_MISSES,
    NO_CALL,
    OPENERS,
    WRONG_OPERATION,
    Function,
)

OUT = REPO / "recipes" / "data" / "tool_calls.jsonl"
# Irrelevance is the largest share: a small model taught mostly to call learns to call whatever it is offered
# (at 25%, the first fine-tune answered only 30% of BFCL's irrelevance items with no call, against the base's 100%).
KINDS = {"simple": 0.25, "multiple": 0.2, "parallel": 0.15, "irrelevance": 0.4}


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _answer(calls: list[tuple[str, dict[str, Any]]]) -> str:
    return "\n".join("<tool_call>\n" + json.dumps({"name": n, "arguments": a}, ensure_ascii=False) + "\n</tool_call>"
                     for n, a in calls)


def _row(offered: list[Function], user: str, answer: str, kind: str) -> dict[str, Any]:
    system = bfcl.tools_system_message(bfcl.as_tools([f.doc() for f in offered]))
    return {"kind": kind, "messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                                       {"role": "assistant", "content": answer}]}


def make(rows: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    kinds = [k for k, share in KINDS.items() for _ in range(round(share * rows))]
    rng.shuffle(kinds)
    for kind in kinds:
        fn = rng.choice(FUNCTIONS)
        if kind in ("simple", "multiple"):
            clause, args = fn.request(rng)
            offered = [fn]
            if kind == "multiple":
                offered += rng.sample([f for f in FUNCTIONS if f is not fn], rng.choice((2, 3)))
                rng.shuffle(offered)
            user = rng.choice(OPENERS).format(c=clause, C=_cap(clause))
            out.append(_row(offered, user, _answer([(fn.name, args)]), kind))
        elif kind == "parallel":
            asks = []
            while len(asks) < rng.choice((2, 2, 3)):
                ask = fn.request(rng)
                if ask[1] not in [a for _, a in asks]:
                    asks.append(ask)
            c = [a[0] for a in asks]
            joins = JOINS if len(c) == 2 else JOINS3
            user = rng.choice(joins).format(**{f"c{i + 1}": x for i, x in enumerate(c)},
                                            **{f"C{i + 1}": _cap(x) for i, x in enumerate(c)})
            out.append(_row([fn], user, _answer([(fn.name, a) for _, a in asks]), kind))
        else:
            # One function offered, as in BFCL's irrelevance items, now and then two. The request: a third
            # of the time one another function here would serve (the tool list decides, not the phrasing),
            # a third an operation the offered function does not do on its own topic, with arguments; the
            # rest a question near its topic or a general one.
            offered = rng.sample([f for f in FUNCTIONS if f is not fn], rng.choice((1, 1, 1, 2)))
            draw = rng.random()
            if draw < 0.3:
                user = rng.choice(OPENERS).format(c=(c := fn.request(rng)[0]), C=_cap(c))
            elif draw < 0.65:
                c = rng.choice(WRONG_OPERATION[rng.choice(offered).name])
                user = rng.choice(OPENERS).format(c=c, C=_cap(c))
            elif draw < 0.8:
                user = rng.choice(NEAR_MISSES[rng.choice(offered).name])
            else:
                user = rng.choice(GENERAL)
            out.append(_row(offered, user, rng.choice(NO_CALL), kind))
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def overlap(rows: list[dict[str, Any]], ngram: int = 6) -> tuple[int, int, set[str], list[str]]:
    """(BFCL questions read, BFCL function names read, names shared, requests sharing an n-gram)."""
    root = bfcl.data_dir()
    names: set[str] = set()
    grams: set[tuple[str, ...]] = set()
    questions = 0
    for path in sorted(root.glob("BFCL_v4_*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # format_sensitivity.json is one JSON object of item ids, not lines of items
            if not isinstance(entry, dict):
                continue
            names |= {f.get("name", "") for f in entry.get("function", []) if isinstance(f, dict)}
            for turn in entry.get("question", []):
                for message in turn if isinstance(turn, list) else []:
                    words = _words(str(message.get("content", "")))
                    grams |= {tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)}
                    questions += 1
    ours = {f.name for f in FUNCTIONS}
    shared_names = ours & names
    shared = []
    for row in rows:
        words = _words(row["messages"][1]["content"])
        if any(tuple(words[i:i + ngram]) in grams for i in range(len(words) - ngram + 1)):
            shared.append(row["messages"][1]["content"])
    return questions, len(names), shared_names, shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=260)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="compare with BFCL's data; write nothing")
    args = parser.parse_args()
    rows = make(args.rows, args.seed)
    questions, names, shared_names, shared = overlap(rows)
    print(f"{len(rows)} rows ({', '.join(f'{k} {sum(r['kind'] == k for r in rows)}' for k in KINDS)}) from "
          f"{len(FUNCTIONS)} functions; against BFCL's {questions} questions and {names} function names: "
          f"{len(shared_names)} names and {len(shared)} requests in common (6-word runs)")
    if shared_names or shared:
        sys.exit(f"overlap with BFCL: names {sorted(shared_names)}, requests {shared[:3]}")
    if not args.check:
        args.out.write_text("".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n" for r in rows))
        print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
