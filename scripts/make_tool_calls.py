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
- irrelevance: functions offered that do not fit the request (often a request another function here
  would serve), and no call.

The functions, argument types and phrasings are this file's own (household, travel, hobby and office
errands); none is BFCL's. `--check` (run by the tests) compares them with every BFCL data file in the
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.evaluation.benchmarks import bfcl

OUT = REPO / "recipes" / "data" / "tool_calls.jsonl"
# Irrelevance is the largest share: a small model taught mostly to call learns to call whatever it is offered
# (at 25%, the first fine-tune answered only 30% of BFCL's irrelevance items with no call, against the base's 100%).
KINDS = {"simple": 0.25, "multiple": 0.2, "parallel": 0.15, "irrelevance": 0.4}


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # BFCL's type names (string, integer, float, boolean): as_tools maps them as it maps BFCL's
    description: str
    values: tuple[Any, ...]
    enum: bool = False  # the values are the parameter's whole enum
    required: bool = True
    phrase: str = ""  # an optional parameter's words, appended to the clause when it is given


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    params: tuple[Param, ...]
    clauses: tuple[str, ...]  # lower-case requests with {param} slots, for the required parameters
    spoken: dict[str, dict[Any, str]] = field(default_factory=dict)  # param -> value -> its words

    def doc(self) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for p in self.params:
            properties[p.name] = {"type": p.type, "description": p.description}
            if p.enum:
                properties[p.name]["enum"] = list(p.values)
        return {"name": self.name, "description": self.description,
                "parameters": {"type": "dict", "properties": properties,
                               "required": [p.name for p in self.params if p.required]}}

    def request(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        """(a clause asking for one call, the call's arguments)."""
        args = {p.name: rng.choice(p.values) for p in self.params if p.required}
        clause = rng.choice(self.clauses)
        for p in self.params:
            if not p.required and rng.random() < 0.5:
                args[p.name] = rng.choice(p.values)
                clause += p.phrase
        words = {k: self.spoken.get(k, {}).get(v, v) for k, v in args.items()}
        return clause.format(**words), args


def _p(name: str, type_: str, description: str, values: Any, **kw: Any) -> Param:
    return Param(name, type_, description, tuple(values), **kw)


PLANTS = ("fern", "basil", "orchid", "monstera", "cactus", "tomato seedlings", "peace lily")
STREETS = ("Harbour Road", "Mill Lane", "Elm Court", "Quarry Street", "Ferry Walk")
CITIES = ("Tallinn", "Porto", "Ghent", "Bergen", "Ljubljana", "Valletta", "Cork", "Tartu")
NAMES = ("Amara", "Tomasz", "Ines", "Kofi", "Linnea", "Ravi", "Odette", "Mateo")
BOOKS = ("The Glass Orchard", "Winter Ledger", "Salt and Lanterns", "The Quiet Engine", "Paper Tides")
LAKES = ("Lake Mirrow", "Blackwater Lake", "Lake Tansy", "Fenwick Reservoir")
BIRDS = ("goldfinch", "heron", "kestrel", "wren", "lapwing")

FUNCTIONS: tuple[Function, ...] = (
    Function("schedule_plant_watering", "Set a repeating watering reminder for a house plant.",
             (_p("plant", "string", "The plant to water.", PLANTS),
              _p("every_days", "integer", "Days between waterings.", range(2, 15)),
              _p("amount_ml", "integer", "Water per watering, in millilitres.", (50, 100, 150, 200, 250, 300))),
             ("water the {plant} every {every_days} days with {amount_ml} ml",
              "set up watering for my {plant}: {amount_ml} millilitres every {every_days} days",
              "remind me to give the {plant} {amount_ml} ml of water every {every_days} days")),
    Function("reserve_library_book", "Put a hold on a book at a branch of the city library.",
             (_p("title", "string", "The book's title.", BOOKS),
              _p("branch", "string", "The library branch.", ("Northgate", "Riverside", "Old Town", "Westfield")),
              _p("pickup_days", "integer", "Days to keep it at the desk.", (3, 5, 7), required=False,
                 phrase=" and keep it for {pickup_days} days")),
             ("reserve '{title}' at the {branch} branch", "put a hold on {title} at the {branch} library")),
    Function("set_room_thermostat", "Set the target temperature of one room's thermostat.",
             (_p("room", "string", "The room.", ("bedroom", "kitchen", "study", "nursery", "living room")),
              _p("celsius", "float", "Target temperature in degrees Celsius.", (18.5, 19.0, 20.5, 21.0, 22.5, 23.0))),
             ("set the {room} to {celsius} degrees", "make the {room} thermostat {celsius} °C",
              "warm the {room} to {celsius} degrees Celsius")),
    Function("log_training_run", "Record a run in the training diary.",
             (_p("distance_km", "float", "Distance run, in kilometres.", (3.5, 5.0, 7.2, 10.0, 12.4, 21.1)),
              _p("minutes", "integer", "Time taken, in minutes.", range(18, 130, 7)),
              _p("surface", "string", "What it was run on.", ("road", "trail", "track"), enum=True, required=False,
                 phrase=" on the {surface}")),
             ("log a {distance_km} km run that took {minutes} minutes",
              "add my run to the diary: {distance_km} kilometres in {minutes} minutes")),
    Function("order_office_coffee", "Order a drink from the office café.",
             (_p("drink", "string", "The drink.", ("espresso", "latte", "cappuccino", "mocha", "flat white"), enum=True),
              _p("size", "string", "Cup size.", ("small", "medium", "large"), enum=True),
              _p("extra_shots", "integer", "Extra espresso shots.", (1, 2, 3), required=False,
                 phrase=" with {extra_shots} extra shots")),
             ("order a {size} {drink}", "get me a {size} {drink} from the café")),
    Function("send_postcard", "Print and post a postcard with a short message.",
             (_p("recipient", "string", "Who receives it.", NAMES),
              _p("city", "string", "The city it goes to.", CITIES),
              _p("message", "string", "The text on the card.", ("Wish you were here", "Happy birthday",
                                                                  "See you soon", "Greetings from the coast"))),
             ("send a postcard to {recipient} in {city} saying '{message}'",
              "post a card to {recipient} in {city} that reads '{message}'")),
    Function("plan_bike_route", "Find a cycling route between two places in town.",
             (_p("start", "string", "Where the ride starts.", STREETS),
              _p("end", "string", "Where it ends.", ("the station", "the market", "the university", "the pier")),
              _p("avoid_hills", "boolean", "Prefer flat roads.", (True,), required=False,
                 phrase=" avoiding hills")),
             ("plan a bike ride from {start} to {end}", "work out a cycle path from {start} to {end}")),
    Function("track_parcel", "Where a parcel is, by its tracking code.",
             (_p("tracking_code", "string", "The carrier's tracking code.",
                 ("ZX4471KP", "LT-99310-B", "QP20577", "MW-4410-77", "RB118802TX")),),
             ("where is parcel {tracking_code}", "track the parcel with code {tracking_code}",
              "check on delivery {tracking_code}")),
    Function("add_calendar_reminder", "Add a reminder to the calendar.",
             (_p("title", "string", "What to be reminded of.", ("dentist", "pay rent", "call grandma", "team lunch",
                                                                "renew passport")),
              _p("date", "string", "The day, as YYYY-MM-DD.", ("2027-01-09", "2027-02-14", "2027-03-30", "2027-05-02")),
              _p("hour", "integer", "Hour of the day, 0-23.", (8, 9, 12, 15, 18))),
             ("remind me about '{title}' on {date} at {hour}:00", "add '{title}' to my calendar for {date} at hour {hour}")),
    Function("rate_recipe", "Give a recipe in the cookbook app a star rating.",
             (_p("recipe_name", "string", "The recipe.", ("lentil soup", "lemon tart", "mushroom risotto", "fish tacos")),
              _p("stars", "integer", "Stars, 1 to 5.", (1, 2, 3, 4, 5))),
             ("rate the {recipe_name} {stars} stars", "give my {recipe_name} recipe {stars} out of 5")),
    Function("check_tide_times", "High and low tide times at a harbour on a day.",
             (_p("harbour", "string", "The harbour.", ("Port Edge", "Saltmarsh Quay", "Gull Point", "Kelp Bay")),
              _p("date", "string", "The day, as YYYY-MM-DD.", ("2027-06-01", "2027-07-19", "2027-08-08"))),
             ("when are the tides at {harbour} on {date}", "get the tide times for {harbour} on {date}")),
    Function("convert_shoe_size", "Convert a shoe size between sizing systems.",
             (_p("size", "float", "The size to convert.", (6.0, 7.5, 9.0, 10.5, 42.0, 44.0)),
              _p("from_system", "string", "The size's system.", ("EU", "US", "UK"), enum=True),
              _p("to_system", "string", "The system wanted.", ("EU", "US", "UK"), enum=True)),
             ("convert shoe size {size} from {from_system} to {to_system}",
              "what is a {from_system} {size} shoe in {to_system} sizes")),
    Function("mute_chat_channel", "Silence a chat channel's notifications for a while.",
             (_p("channel", "string", "The channel's name.", ("#random", "#builds", "#design", "#support")),
              _p("hours", "integer", "For how many hours.", (1, 2, 4, 8, 24))),
             ("mute {channel} for {hours} hours", "silence the {channel} channel for {hours} hours")),
    Function("record_bird_sighting", "Add a sighting to the bird survey.",
             (_p("species", "string", "The bird.", BIRDS),
              _p("count", "integer", "How many were seen.", range(1, 13)),
              _p("park", "string", "Where.", ("Elm Park", "the marsh reserve", "Hollow Woods"))),
             ("record {count} {species} seen in {park}", "log a sighting of {count} {species} at {park}")),
    Function("rent_kayak", "Book kayaks at a lake's boathouse.",
             (_p("lake", "string", "The lake.", LAKES),
              _p("hours", "integer", "Rental length in hours.", (1, 2, 3, 4)),
              _p("people", "integer", "How many paddlers.", (1, 2, 3, 4, 6))),
             ("rent kayaks on {lake} for {people} people for {hours} hours",
              "book {hours} hours of kayaking at {lake} for {people}")),
    Function("split_restaurant_bill", "Split a bill evenly, tip included.",
             (_p("total", "float", "The bill before tip.", (48.6, 73.2, 120.0, 96.4, 210.5)),
              _p("people", "integer", "How many share it.", (2, 3, 4, 5, 6)),
              _p("tip_percent", "integer", "Tip, in percent.", (10, 12, 15, 20), required=False,
                 phrase=" with a {tip_percent}% tip")),
             ("split a bill of {total} between {people} people", "divide {total} evenly among {people} of us")),
    Function("find_dog_park", "Dog parks in a neighbourhood.",
             (_p("neighbourhood", "string", "The neighbourhood.", ("Canal Quarter", "Hillcrest", "Docklands", "Old Mill")),
              _p("off_leash", "boolean", "Only parks where dogs may run off the leash.", (True,), required=False,
                 phrase=" where dogs can go off the leash")),
             ("find a dog park in {neighbourhood}", "which dog parks are there in {neighbourhood}")),
    Function("lookup_train_platform", "Which platform a train leaves from.",
             (_p("train_number", "string", "The train's number.", ("IC 512", "RE 7731", "EX 88", "R 2046")),
              _p("station", "string", "The station.", ("Central", "North Junction", "Airport", "Riverside"))),
             ("which platform does {train_number} leave from at {station}",
              "look up the platform for train {train_number} at {station} station")),
    Function("brew_tea_timer", "Start a timer for steeping tea.",
             (_p("variety", "string", "The tea.", ("green", "black", "oolong", "white"), enum=True),
              _p("minutes", "integer", "Steeping time.", (2, 3, 4, 5))),
             ("start a {minutes} minute timer for {variety} tea", "time my {variety} tea for {minutes} minutes")),
    Function("screen_pixel_density", "Pixels per inch of a screen.",
             (_p("width_px", "integer", "Width in pixels.", (1920, 2560, 3840, 1366)),
              _p("height_px", "integer", "Height in pixels.", (1080, 1440, 2160, 768)),
              _p("diagonal_inches", "float", "The diagonal, in inches.", (13.3, 15.6, 24.0, 27.0))),
             ("what is the pixel density of a {diagonal_inches} inch {width_px}x{height_px} screen",
              "work out the PPI of a {width_px} by {height_px} display at {diagonal_inches} inches")),
    Function("add_shopping_item", "Put an item on the shared shopping list.",
             (_p("item", "string", "What to buy.", ("oat milk", "eggs", "rye bread", "coffee beans", "apples")),
              _p("quantity", "integer", "How many.", (1, 2, 3, 6, 12))),
             ("add {quantity} {item} to the shopping list", "put {item} on the list, {quantity} of them")),
    Function("book_meeting_room", "Book a meeting room at the office.",
             (_p("room", "string", "The room.", ("Aurora", "Basalt", "Cedar", "Delta")),
              _p("start_hour", "integer", "Starting hour, 0-23.", (9, 10, 11, 14, 16)),
              _p("duration_minutes", "integer", "Length in minutes.", (30, 45, 60, 90))),
             ("book {room} at {start_hour}:00 for {duration_minutes} minutes",
              "reserve the {room} room from {start_hour}:00, {duration_minutes} minutes")),
)

OPENERS = ("Please {c}.", "Can you {c}?", "I need you to {c}.", "{C}.", "Could you {c}, please?", "Hey, {c}.")
JOINS = ("{C1}, and {c2}.", "Please {c1}, then {c2}.", "{C1}. Also {c2}.", "Can you {c1} and also {c2}?")
JOINS3 = ("{C1}, {c2}, and {c3}.", "Please {c1}; {c2}; and {c3}.")
GENERAL = ("What is the capital of Canada?", "Write a haiku about rain.", "How many legs does a spider have?",
           "Tell me a joke about cats.", "What does 'serendipity' mean?", "Who painted the Mona Lisa?",
           "Summarise the plot of Romeo and Juliet in one sentence.", "What is 17 plus 25?",
           "Give me three tips for sleeping better.", "How do I say thank you in Spanish?",
           # Numbers that look like arguments, for functions that take none of them.
           "What is the square root of 144?", "Turn 30 degrees Celsius into Fahrenheit for me.",
           "How many seconds are there in three hours?", "Work out the area of a circle whose radius is 4 cm.",
           "What is 12 percent of 250?", "Is 91 a prime number?", "Divide 84 by 7 and tell me the answer.",
           "Who first walked on the Moon?", "In which year did the Berlin Wall fall?",
           "Explain photosynthesis in one sentence.", "Which ocean is the largest?",
           "How many bones does an adult human have?", "Recommend a film for a rainy evening.")
# Per function, requests on its own topic that it cannot serve: BFCL's irrelevance items are mostly such
# near misses (a GDP function offered for a question about the Gini coefficient).
NEAR_MISSES: dict[str, tuple[str, ...]] = {
    "schedule_plant_watering": ("Why are my basil leaves turning yellow?", "How much sunlight does an orchid need?"),
    "reserve_library_book": ("Who wrote The Glass Orchard?", "What time does the library close on Sundays?"),
    "set_room_thermostat": ("What temperature is it outside right now?", "Why does my radiator make a knocking noise?"),
    "log_training_run": ("How many calories does a 10 km run burn?", "What is a good pace for a first half marathon?"),
    "order_office_coffee": ("How much caffeine is in an espresso?", "What is the difference between a latte and a flat white?"),
    "send_postcard": ("How long does a letter take to reach Porto?", "How much is a stamp for a postcard abroad?"),
    "plan_bike_route": ("How do I fix a flat bicycle tyre?", "Which bike lights are legal at night?"),
    "track_parcel": ("How much does it cost to ship a 2 kg box abroad?", "What is the biggest parcel the post office takes?"),
    "add_calendar_reminder": ("How many days are left until the end of the year?", "Which day of the week was 1 March 2020?"),
    "rate_recipe": ("How long should I boil an egg?", "What can I use instead of butter in a cake?"),
    "check_tide_times": ("How warm is the sea in Valletta in June?", "Why does the Moon cause tides?"),
    "convert_shoe_size": ("Which running shoes suit flat feet?", "How do I clean white trainers?"),
    "mute_chat_channel": ("How do I delete my chat account?", "Who sent the most messages in the team channel yesterday?"),
    "record_bird_sighting": ("What does a kestrel eat?", "When do herons build their nests?"),
    "rent_kayak": ("Is it safe to swim in Lake Tansy?", "How do I paddle a kayak in a straight line?"),
    "split_restaurant_bill": ("What is a normal tip in Ghent?", "Which restaurants in Tartu serve vegan food?"),
    "find_dog_park": ("How often should I walk a puppy?", "What vaccinations does a dog need?"),
    "lookup_train_platform": ("How much is a train ticket from Ghent to Porto?", "Is the night train to Bergen late?"),
    "brew_tea_timer": ("Which tea has the most caffeine?", "Is green tea good for sleep?"),
    "screen_pixel_density": ("Which laptop has the best battery life?", "How do I make my screen brighter?"),
    "add_shopping_item": ("How much does a kilo of apples cost?", "Which supermarket near me is open late?"),
    "book_meeting_room": ("How many people fit in the large conference room?", "Who booked the meeting room yesterday?"),
}
NO_CALL = ("None of the available functions can do that.", "I can't do that with the tools I have.",
           "The functions available here don't cover that request.")


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
            # One function offered, as in BFCL's irrelevance items, now and then two. The request: half the
            # time one another function here would serve (the tool list decides, not the phrasing), a quarter
            # a near miss on the offered function's own topic, a quarter a general question.
            offered = rng.sample([f for f in FUNCTIONS if f is not fn], rng.choice((1, 1, 1, 2)))
            draw = rng.random()
            if draw < 0.5:
                user = rng.choice(OPENERS).format(c=(c := fn.request(rng)[0]), C=_cap(c))
            elif draw < 0.75:
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
