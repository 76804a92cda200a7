"""The catalogue scripts/make_tool_calls.py draws its conversations from: functions of its own (household,
travel, hobby and office errands, none of them BFCL's), the ways a request is phrased, and the requests
no offered function fits."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


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
# Per function, requests on its own topic, with concrete arguments, for an operation it does not do: the
# hardest near misses, and BFCL's commonest (a BMI function, taking a weight and a height, offered for "the
# area of a triangle with base 10 and height 5"). Phrased as the calling rows are, through OPENERS, so the
# operation decides, not the phrasing: with only question-shaped near misses, the second fine-tune learned
# "an imperative with arguments is a call" and called on 24 of BFCL's 30 irrelevance items.
WRONG_OPERATION: dict[str, tuple[str, ...]] = {
    "schedule_plant_watering": ("repot the monstera into a 30 cm pot", "buy 3 litres of compost for the fern"),
    "reserve_library_book": ("renew 'Winter Ledger' for 14 more days", "pay the 4 euro fine on my library card"),
    "set_room_thermostat": ("tell me the humidity in the bedroom", "switch off the kitchen lights at 23:00"),
    "log_training_run": ("plan a 10 km route along the river", "work out my pace for 21.1 km in 118 minutes"),
    "order_office_coffee": ("cancel the large latte I ordered", "add 12 euro to my café card"),
    "send_postcard": ("send a text to Ines saying I'm late", "find Kofi's postal address in Cork"),
    "plan_bike_route": ("book a taxi from Mill Lane to the station", "rent a bike for 3 hours at the pier"),
    "track_parcel": ("send a 2 kg parcel to Tartu", "change the delivery address of parcel QP20577 to Elm Court"),
    "add_calendar_reminder": ("cancel my dentist appointment on 2027-02-14", "count the weekdays between 2027-01-09 and 2027-03-30"),
    "rate_recipe": ("double the lentil soup recipe for 8 people", "convert 250 grams of flour to cups"),
    "check_tide_times": ("book a fishing boat at Gull Point for 2027-07-19", "tell me the sea temperature at Kelp Bay"),
    "convert_shoe_size": ("order size 42 trail shoes", "convert 7.5 inches to centimetres"),
    "mute_chat_channel": ("post 'build is green' in #builds", "invite Ravi to #design"),
    "record_bird_sighting": ("identify a small brown bird with a red chest", "count the herons in the photo I sent"),
    "rent_kayak": ("book a fishing permit for Lake Mirrow", "check the water temperature of Blackwater Lake"),
    "split_restaurant_bill": ("convert 73.2 euro to Norwegian kroner", "book a table for 4 at 19:00 in Ghent"),
    "find_dog_park": ("book a dog walker in Hillcrest for 2 hours", "find a vet in Docklands open on Sunday"),
    "lookup_train_platform": ("buy a ticket for IC 512 to Airport", "tell me how late RE 7731 is"),
    "brew_tea_timer": ("order 200 grams of oolong tea", "set an alarm for 6:30 tomorrow"),
    "screen_pixel_density": ("calculate the area of a 24 by 18 inch picture frame", "set the screen brightness to 70 percent"),
    "add_shopping_item": ("order 6 eggs for delivery today", "compare the price of oat milk in two shops"),
    "book_meeting_room": ("cancel the Cedar booking at 14:00", "invite the design team to a 30 minute call"),
}
NO_CALL = ("None of the available functions can do that.", "I can't do that with the tools I have.",
           "The functions available here don't cover that request.")
