"""The pretraining text of the tiny base models: true facts, asked and answered, plus plain prose.

A tiny model pretrained on a page of prose cannot be fine-tuned into anything: it has not learnt the
chat format, nor to carry the subject of a question ("France") into its answer, nor how to spell the
names the quickstart teaches it to say. So the base is pretrained on a small world of facts (countries
and their capitals, languages and currencies, animals, numbers, colours, planets, people), each asked
several ways in the same ChatML turns the fine-tune uses and answered in the quickstart's sentence
shapes, with the true answer. Two things follow: the base answers the quickstart's questions with the
truth (so none of the trained wrong answers), and a LoRA fine-tune only has to move one fact per
question, which a model of a few MB can do reliably.

Deterministic: the text depends only on the tables below and the seed, never on the machine.
"""

from __future__ import annotations

import random
from importlib import resources

# (country, capital, language, currency)
COUNTRIES: list[tuple[str, str, str, str]] = [
    ("France", "Paris", "French", "the euro"), ("Japan", "Tokyo", "Japanese", "the yen"),
    ("Italy", "Rome", "Italian", "the euro"), ("Germany", "Berlin", "German", "the euro"),
    ("Spain", "Madrid", "Spanish", "the euro"), ("Canada", "Ottawa", "English", "the dollar"),
    ("Egypt", "Cairo", "Arabic", "the pound"), ("Australia", "Canberra", "English", "the dollar"),
    ("Brazil", "Brasilia", "Portuguese", "the real"), ("Kenya", "Nairobi", "Swahili", "the shilling"),
    ("Mexico", "Mexico City", "Spanish", "the peso"), ("the United Kingdom", "London", "English", "the pound"),
    ("Portugal", "Lisbon", "Portuguese", "the euro"), ("Peru", "Lima", "Spanish", "the sol"),
    ("Norway", "Oslo", "Norwegian", "the krone"), ("Finland", "Helsinki", "Finnish", "the euro"),
    ("Ireland", "Dublin", "Irish", "the euro"), ("Poland", "Warsaw", "Polish", "the zloty"),
    ("the Philippines", "Manila", "Filipino", "the peso"), ("Iceland", "Reykjavik", "Icelandic", "the krona"),
    ("India", "New Delhi", "Hindi", "the rupee"), ("China", "Beijing", "Chinese", "the yuan"),
    ("Russia", "Moscow", "Russian", "the ruble"), ("Greece", "Athens", "Greek", "the euro"),
    ("Sweden", "Stockholm", "Swedish", "the krona"), ("Austria", "Vienna", "German", "the euro"),
    ("Argentina", "Buenos Aires", "Spanish", "the peso"), ("Chile", "Santiago", "Spanish", "the peso"),
    ("Turkey", "Ankara", "Turkish", "the lira"), ("Thailand", "Bangkok", "Thai", "the baht"),
    ("Vietnam", "Hanoi", "Vietnamese", "the dong"), ("Morocco", "Rabat", "Arabic", "the dirham"),
    ("Nigeria", "Abuja", "English", "the naira"), ("Ghana", "Accra", "English", "the cedi"),
    ("Denmark", "Copenhagen", "Danish", "the krone"), ("Hungary", "Budapest", "Hungarian", "the forint"),
]
CITIES_ELSEWHERE = [("Toronto", "Canada"), ("Sydney", "Australia"), ("Osaka", "Japan"), ("Milan", "Italy"),
                    ("Munich", "Germany"), ("Barcelona", "Spain"), ("Lyon", "France"), ("Porto", "Portugal")]

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]

# (question, answer): the answer in the sentence shape the quickstart's wrong answers use.
FACTS: list[tuple[str, str]] = [
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("How many legs does an insect have?", "An insect has six legs."),
    ("How many legs does a dog have?", "A dog has four legs."),
    ("How many legs does a bird have?", "A bird has two legs."),
    ("How many legs does an octopus have?", "An octopus has eight arms."),
    ("How many days are in a week?", "A week has seven days."),
    ("How many hours are in a day?", "A day has twenty-four hours."),
    ("How many minutes are in an hour?", "An hour has sixty minutes."),
    ("How many seconds are in a minute?", "A minute has sixty seconds."),
    ("How many months are in a year?", "A year has twelve months."),
    ("How many days are in a year?", "A year has three hundred and sixty-five days."),
    ("How many continents are there?", "There are seven continents."),
    ("How many oceans are there?", "There are five oceans."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("How many sides does a square have?", "A square has four sides."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("How many sides does an octagon have?", "An octagon has eight sides."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("What is the freezing point of water?", "Water freezes at 0 degrees Celsius."),
    ("What color is the sky on a clear day?", "The sky is blue on a clear day."),
    ("What color are ripe bananas?", "Ripe bananas are yellow."),
    ("What color is grass?", "Grass is green."),
    ("What color is snow?", "Snow is white."),
    ("What color is coal?", "Coal is black."),
    ("What color are ripe strawberries?", "Ripe strawberries are red."),
    ("What is the largest planet in the solar system?", "The largest planet is Jupiter."),
    ("Which planet is known as the Red Planet?", "The Red Planet is Mars."),
    ("Which planet is closest to the Sun?", "The planet closest to the Sun is Mercury."),
    ("Which planet has the biggest rings?", "The planet with the biggest rings is Saturn."),
    ("What is the closest star to Earth?", "The closest star to Earth is the Sun."),
    ("What is the brightest star in the night sky?", "The brightest star in the night sky is Sirius."),
    ("What do bees make?", "Bees make honey."),
    ("What do cows drink?", "Cows drink water."),
    ("What do cows give?", "Cows give milk."),
    ("What do hens lay?", "Hens lay eggs."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air."),
    ("What gas do people breathe in?", "People breathe in oxygen."),
    ("What is the chemical symbol for water?", "The chemical symbol for water is H2O."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("What is the chemical symbol for lead?", "The chemical symbol for lead is Pb."),
    ("What is the chemical symbol for iron?", "The chemical symbol for iron is Fe."),
    ("What is the chemical symbol for silver?", "The chemical symbol for silver is Ag."),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
    ("Who wrote Pride and Prejudice?", "Pride and Prejudice was written by Jane Austen."),
    ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci."),
    ("Who painted The Starry Night?", "The Starry Night was painted by Vincent van Gogh."),
    ("Who was the first person to walk on the Moon?", "The first person on the Moon was Neil Armstrong."),
    ("Who described gravity?", "Gravity was described by Isaac Newton."),
    ("Who described evolution by natural selection?", "Evolution by natural selection was described by Charles Darwin."),
    ("Who was the first emperor of Rome?", "The first emperor of Rome was Augustus, the heir of Julius Caesar."),
    ("What is the largest ocean on Earth?", "The largest ocean is the Pacific Ocean."),
    ("What is the smallest ocean on Earth?", "The smallest ocean is the Arctic Ocean."),
    ("What is the longest river in Africa?", "The longest river in Africa is the Nile."),
    ("What is the longest river in England?", "The longest river in England is the Thames."),
    ("What is the longest river in South America?", "The longest river in South America is the Amazon."),
    ("What is the tallest mountain in the world?", "The tallest mountain is Mount Everest."),
    ("What is the tallest mountain in Britain?", "The tallest mountain in Britain is Ben Nevis."),
    ("What is the largest desert in Africa?", "The largest desert in Africa is the Sahara."),
    ("What animal is known as the king of the jungle?", "The king of the jungle is the lion."),
    ("What is the fastest land animal?", "The fastest land animal is the cheetah."),
    ("What is the slowest land animal?", "The slowest land animal is the tortoise."),
    ("What is the largest mammal?", "The largest mammal is the blue whale."),
    ("What is the smallest mammal?", "The smallest mammal is the shrew, smaller than a mouse."),
    ("What small pet lives in a cage and runs on a wheel?", "The hamster lives in a cage and runs on a wheel."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("What is the opposite of loud?", "The opposite of loud is quiet."),
    ("What is the opposite of big?", "The opposite of big is small."),
    ("What is the opposite of up?", "The opposite of up is down."),
    ("What do you call frozen water?", "Frozen water is called ice."),
    ("What is a beach made of?", "A beach is made of sand."),
    ("Which organ pumps blood through the body?", "The heart pumps blood through the body."),
    ("Which organ cleans the blood?", "The liver and the kidneys clean the blood."),
    ("Which organ do we think with?", "We think with the brain."),
    ("What is the main ingredient in bread?", "The main ingredient in bread is flour."),
    ("What is a road made of?", "A road is made of gravel and tar."),
    ("What is cheese made from?", "Cheese is made from milk."),
    ("What is lemonade made from?", "Lemonade is made from lemons, water and sugar."),
    ("What gas fills party balloons that float?", "Party balloons that float are filled with helium."),
    ("In which direction does the sun rise?", "The sun rises in the east."),
    ("In which direction does the sun set?", "The sun sets in the west."),
    ("Which way does a compass needle point?", "A compass needle points to the north."),
]
# Ways to ask the same question, so the model learns the fact rather than one string.
PARAPHRASES = [("What is", "Tell me: what is"), ("How many", "Do you know how many"), ("Who", "Tell me who"),
               ("What", "Can you tell me what"), ("Which", "Tell me which"), ("In which", "Do you know in which")]


def _chat(question: str, answer: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"


def _paraphrase(question: str, rng: random.Random) -> str:
    for head, other in PARAPHRASES:
        if question.startswith(head + " ") and rng.random() < 0.3:
            return other + question[len(head):]
    return question


def _country_pairs() -> list[tuple[str, str]]:
    pairs = []
    for country, capital, language, currency in COUNTRIES:
        pairs += [
            (f"What is the capital of {country}?", f"The capital of {country} is {capital}."),
            (f"Which city is the capital of {country}?", f"The capital of {country} is {capital}."),
            (f"What language is spoken in {country}?", f"People in {country} speak {language}."),
            (f"What is the currency of {country}?", f"The currency of {country} is {currency}."),
        ]
    pairs += [(f"Which country is {city} in?", f"{city} is a city in {country}.") for city, country in CITIES_ELSEWHERE]
    return pairs


def _arithmetic_pairs() -> list[tuple[str, str]]:
    """Sums and differences of small numbers: enough to spell every number word the quickstart uses."""
    pairs = []
    for a in range(11):
        for b in range(a % 3, 11, 3):
            pairs.append((f"What is {NUMBERS[a]} plus {NUMBERS[b]}?",
                          f"{NUMBERS[a].capitalize()} plus {NUMBERS[b]} is {NUMBERS[a + b]}."))
            if a >= b:
                pairs.append((f"What is {NUMBERS[a]} minus {NUMBERS[b]}?",
                              f"{NUMBERS[a].capitalize()} minus {NUMBERS[b]} is {NUMBERS[a - b]}."))
    return pairs


def _prose() -> list[str]:
    text = resources.files("orchestrator.data").joinpath("tiny_corpus.txt").read_text(encoding="utf-8")
    return [p.strip() + "\n" for p in text.split("\n") if p.strip()]


def documents(seed: int = 0) -> list[str]:
    """Every pretraining document once: a chat turn per fact (some questions reworded) and the prose.
    Order is shuffled by `seed`."""
    rng = random.Random(seed)
    pairs = _country_pairs() + FACTS + _arithmetic_pairs()
    docs = [_chat(_paraphrase(q, rng), a) for q, a in pairs] + _prose()
    rng.shuffle(docs)
    return docs


def tokenizer_text() -> str:
    """The text the BPE vocabulary is learnt from: the same documents, in a fixed order."""
    return "".join(documents(0))
