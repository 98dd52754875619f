"""Sentence templates for the synthetic tasks, written out per split.

Decisions:
- Templates are listed by hand per split (4 train / 1 validation / 2 test for each slot) rather than
  hashed, so every split is guaranteed its own templates and a reader can see which wording is
  held out. Test wordings never occur in training: a bridge that only learned the training
  phrasings fails on test.
- Relay facts use `{name}`, `{value}` and `{a}` (the article for value, "a"/"an"); questions use
  `{name}` only. Arithmetic templates use `{name}`, `{item}` (a plural noun) and the step's numbers.
- A "share" step is always the last one and brings its own question, so it is stored as one
  sentence-plus-question template.
"""

from __future__ import annotations

RELAY_FACTS = {
    "code": {
        "train": ("{name}'s code is {value}.", "The code assigned to {name} is {value}.",
                  "{name} has the access code {value}.", "{name} was given the code {value}."),
        "validation": ("The security code for {name} is {value}.",),
        "test": ("{name} unlocks the door with code {value}.", "Code {value} belongs to {name}."),
    },
    "city": {
        "train": ("{name} lives in {value}.", "{name}'s home city is {value}.",
                  "{name} resides in {value}.", "{name} has a flat in {value}."),
        "validation": ("{name} is based in {value}.",),
        "test": ("{name} calls {value} home.", "These days {name} settles in {value} for good."),
    },
    "job": {
        "train": ("{name} works as {a} {value}.", "{name} is {a} {value} by trade.",
                  "{name} has a job as {a} {value}.", "{name} earns a living as {a} {value}."),
        "validation": ("{name} is employed as {a} {value}.",),
        "test": ("By profession, {name} is {a} {value}.", "{name} makes money working as {a} {value}."),
    },
    "pet": {
        "train": ("{name} has a pet {value}.", "{name}'s pet is {a} {value}.",
                  "{name} keeps {a} {value} as a pet.", "{name} looks after a pet {value}."),
        "validation": ("At home, {name} cares for {a} {value}.",),
        "test": ("The animal living with {name} is {a} {value}.", "{name} owns {a} {value}."),
    },
    "colour": {
        "train": ("{name}'s favourite colour is {value}.", "{name} likes {value} best of all colours.",
                  "The colour {name} loves most is {value}.", "{name} prefers the colour {value}."),
        "validation": ("{name} would always pick {value} as a colour.",),
        "test": ("Of every colour, {name} adores {value}.", "{name}'s top colour choice is {value}."),
    },
    "age": {
        "train": ("{name} is {value} years old.", "{name}'s age is {value}.",
                  "{name} has just turned {value}.", "{name} is aged {value}."),
        "validation": ("{name} has lived for {value} years.",),
        "test": ("{name} reached the age of {value}.", "Born {value} years ago, {name} is an adult."),
    },
}

RELAY_QUESTIONS = {
    "code": {
        "train": ("What is {name}'s code?", "Which code does {name} have?",
                  "What code was {name} given?", "What is the code assigned to {name}?"),
        "validation": ("What is the security code for {name}?",),
        "test": ("Which number is {name}'s code?", "Tell me the code of {name}."),
    },
    "city": {
        "train": ("Where does {name} live?", "What is {name}'s home city?",
                  "In which city does {name} reside?", "Which city does {name} live in?"),
        "validation": ("Where is {name} based?",),
        "test": ("Which city is home to {name}?", "Name the city {name} lives in."),
    },
    "job": {
        "train": ("What does {name} do for a living?", "What is {name}'s job?",
                  "What is {name}'s occupation?", "What does {name} work as?"),
        "validation": ("What is {name} employed as?",),
        "test": ("What is {name}'s profession?", "Which trade does {name} follow?"),
    },
    "pet": {
        "train": ("What pet does {name} have?", "What is {name}'s pet?",
                  "Which animal does {name} keep as a pet?", "What kind of pet does {name} own?"),
        "validation": ("Which animal does {name} care for at home?",),
        "test": ("What animal lives with {name}?", "Name the pet belonging to {name}."),
    },
    "colour": {
        "train": ("What is {name}'s favourite colour?", "Which colour does {name} like best?",
                  "What colour does {name} love most?", "Which colour does {name} prefer?"),
        "validation": ("What colour would {name} always pick?",),
        "test": ("Which colour does {name} adore?", "Name the colour {name} likes most."),
    },
    "age": {
        "train": ("How old is {name}?", "What is {name}'s age?",
                  "What age has {name} just turned?", "What age is {name}?"),
        "validation": ("For how many years has {name} lived?",),
        "test": ("At what age is {name} now?", "Give the age of {name}."),
    },
}

ARITHMETIC = {
    "start": {
        "train": ("{name} has {x} {item}.", "{name} owns {x} {item}.",
                  "{name} collected {x} {item}.", "{name} starts the day with {x} {item}."),
        "validation": ("There are {x} {item} in {name}'s bag.",),
        "test": ("{name} keeps {x} {item} in a drawer.", "At first, {name} holds {x} {item}."),
    },
    "add": {
        "train": ("{name} buys {x} more.", "{name} finds {x} more {item}.",
                  "A friend gives {name} {x} more {item}.", "{name} gets {x} more {item} from a neighbour."),
        "validation": ("{name}'s aunt sends {x} more {item}.",),
        "test": ("{name} wins {x} more {item} at a fair.", "Later, {name} picks up another {x} {item}."),
    },
    "sub": {
        "train": ("{name} gives {x} away.", "{name} loses {x} of them.",
                  "{name} sells {x} {item}.", "{name} uses up {x} of the {item}."),
        "validation": ("{name} donates {x} {item} to a school.",),
        "test": ("{name} trades away {x} {item}.", "Then {x} of the {item} get broken."),
    },
    "groups": {
        "train": ("{name} buys {x} packs with {y} {item} in each.", "{name} receives {x} boxes of {y} {item}.",
                  "{name} gets {x} bags holding {y} {item} each.", "{name} adds {x} rows of {y} {item}."),
        "validation": ("{name} orders {x} crates of {y} {item}.",),
        "test": ("{name} is handed {x} jars, each containing {y} {item}.",
                 "Then {x} parcels arrive for {name} with {y} {item} apiece."),
    },
    "share": {
        "train": ("{name} splits the {item} equally into {x} bags. How many {item} go into each bag?",
                  "{name} shares the {item} equally among {x} friends. How many {item} does each friend get?",
                  "{name} puts the {item} into {x} equal piles. How many {item} are in each pile?",
                  "{name} divides the {item} fairly between {x} children. How many {item} does each child get?"),
        "validation": ("{name} spreads the {item} evenly over {x} shelves. How many {item} are on each shelf?",),
        "test": ("{name} packs the {item} equally into {x} baskets. How many {item} end up in each basket?",
                 "{name} hands out all the {item} equally to {x} cousins. How many {item} does each cousin receive?"),
    },
    "question": {
        "train": ("How many {item} does {name} have now?", "How many {item} does {name} end up with?",
                  "How many {item} does {name} have at the end?", "How many {item} does {name} have left?"),
        "validation": ("What is the final number of {item} that {name} has?",),
        "test": ("Count the {item} {name} is left with: how many are there?",
                 "In total, how many {item} remain with {name}?"),
    },
}
