"""Extra relay-QA wordings for `relay_qa(..., wide_templates=P)`: a training-only augmentation.

Decisions:
- Training only. With four training wordings per slot a translator learns the wordings rather than
  reading the fact, and loses on the unseen validation/test ones; these 13-19 extra fact and question
  wordings per kind vary word order (the value before the name, the name mid-sentence), preambles
  ("According to the register, ..."), subordinate clauses, passives and possessives.
- Written without reading the validation and test entries of templates.py; 20 per kind and slot
  were written, and the 50 that came nearer to a held-out wording than the original training
  wordings do were dropped (session of 2026-11-25: "The code {value} belongs to {name}." next to
  the test's "Code {value} belongs to {name}." made test wordings effectively seen).
  tests/data/test_wide_templates.py checks that none equals a validation/test or training wording
  (also after lowercasing and dropping punctuation), that none is nearer (word edit distance, or a
  new shared word 3-gram) to a held-out wording of its kind and slot than the four originals are,
  and that every value stays an unambiguous span.
- A Python module in templates.py's shape (kind -> tuple) rather than a .txt file: facts and
  questions per kind need no parser, and the strings' quotes and apostrophes read as in templates.py.
- Placeholders as in templates.py: facts use `{name}` and `{value}` exactly once each and `{a}` (the
  article for value) where job/pet wordings need one; questions use `{name}` only. No template holds
  a digit, so numeric answers (codes, ages) cannot hide inside the wording.
"""

from __future__ import annotations

WIDE_FACTS = {
    "code": (
        "{value} is the code of {name}.", "According to the register, {name}'s code is {value}.",
        "{name} was issued code {value} last week.",
        "On file, {name} is listed under the code {value}.", "The code that {name} uses is {value}.",
        "{name} signs in with the code {value}.",
        "Whenever {name} enters the building, the code {value} is typed in.",
        "{name}, as the records show, holds code {value}.", "The personal code of {name} reads {value}.",
        "{name} keeps the code {value} on a note.", "It is {name} who owns the code {value}.",
        "By the clerk's account, {name} got the code {value}.", "The number {value} serves as {name}'s code.",
        "{name} memorised the code {value}.", "For {name}, the code is {value}.",
        "{name}'s locker opens with the code {value}.", "Staff know {name} by the code {value}.",
        "The code {value} was handed to {name} at the desk.",
    ),
    "city": (
        "{value} is where {name} lives.", "{value} is home to {name}.",
        "According to the census, {name} lives in {value}.", "{name} settled in {value} years ago.",
        "The city {name} calls home is {value}.", "Home, for {name}, is {value}.",
        "{name} rents a house in {value}.", "{name}'s address is in {value}.", "In {value} lives {name}.",
        "{name} moved to {value} and stayed.", "The town where {name} lives is {value}.",
        "{name} now makes a home in {value}.", "{name} is a resident of {value}.",
        "Post for {name} goes to an address in {value}.",
        "{value} is the city where {name} resides.", "By all accounts, {name} lives in {value}.",
        "The home of {name} is in {value}.", "{name}, who grew up elsewhere, lives in {value} now.",
        "Neighbours of {name} in {value} know the family well.",
    ),
    "job": (
        "Day to day, {name} works as {a} {value}.", "{name} is {a} {value} at a local firm.",
        "As {a} {value}, {name} is rarely idle.", "The job of {value} is what {name} does.",
        "{name}'s job is that of {a} {value}.",
        "According to the staff list, {name} is {a} {value}.",
        "{name} trained as {a} {value} and still works as one.",
        "{name} has been {a} {value} for years.", "The {value} at the firm is {name}.",
        "{name} took a post as {a} {value}.", "Taken on as {a} {value}, {name} started last spring.",
        "{name}'s trade is that of {a} {value}.", "In town, {name} is known as the local {value}.",
        "{name} is a professional {value}.",
    ),
    "pet": (
        "{name} lives with {a} {value}.",
        "A small {value} lives with {name}.", "{name} adopted {a} {value} last year.",
        "According to the vet, {name} brings {a} {value} in every month.",
        "{name} takes care of {a} {value} at home.",
        "{name}'s companion animal is {a} {value}.", "{name} feeds {a} {value} every morning.",
        "{name} shares the flat with {a} {value}.", "A pet {value} belongs to {name}.",
        "{name} was given {a} {value} as a pet.",
        "{name}'s household includes {a} {value}.", "Every evening, {name} plays with a pet {value}.",
        "{name} is the owner of {a} {value}.", "There is {a} {value} in {name}'s home.",
        "{name} bought {a} {value} from a breeder.", "{name} dotes on a pet {value}.",
    ),
    "colour": (
        "{name}'s best-loved colour is {value}.", "Of all colours, {name} likes {value} most.",
        "The colour {value} is {name}'s favourite.", "Ask {name} about colours and the answer is always {value}.",
        "According to friends, {name}'s favourite colour is {value}.",
        "No colour pleases {name} more than {value}.", "{name} chooses {value} whenever a colour must be picked.",
        "The favourite colour of {name} is {value}.", "{name} loves the colour {value} above all others.",
        "When buying clothes, {name} picks {value} first.",
        "Given the choice, {name} goes for the colour {value}.", "{name} is fond of the colour {value}.",
        "A fan of {value}, {name} wears it often.", "Among colours, {value} is {name}'s clear favourite.",
        "The colour that {name} likes best is {value}.", "{name} has always had a soft spot for the colour {value}.",
        "It is {value} that {name} likes best.",
    ),
    "age": (
        "{name} turned {value} this year.",
        "According to the register, {name} is {value}.", "At {value}, {name} still works full time.",
        "{name} is now {value} years of age.", "{name}, aged {value}, lives alone.",
        "{name}'s age is given as {value}.",
        "{name} is {value} this year.",
        "Records list {name} as {value} years old.", "{name} is {value} as of today.",
        "{name}, now {value}, took up painting.", "The form gives {name}'s age as {value}.",
        "{value} years have passed since {name} was born.", "Having turned {value}, {name} threw a party.",
        "{name} is exactly {value}.", "{name}'s current age is {value}.", "Ask {name}: the answer is {value} years.",
    ),
}

WIDE_QUESTIONS = {
    "code": (
        "Which code belongs to {name}?", "What code does {name} sign in with?",
        "Which code was allocated to {name}?",
        "According to the register, what is {name}'s code?", "What code is {name} listed under?",
        "Name the code that {name} holds.", "What number serves as {name}'s code?",
        "Which code did {name} receive?", "What code does {name} use?", "Give the code issued to {name}.",
        "Can you say which code {name} owns?",
        "What code opens {name}'s locker?", "By which code is {name} known?", "What code was handed to {name}?",
        "State {name}'s code.", "{name} has a code; what is it?", "Which code did {name} memorise?",
    ),
    "city": (
        "In which place has {name} settled?", "In what city does {name} live?",
        "Which city does {name} call home?", "Where did {name} settle?", "Tell me where {name} lives.",
        "What city is {name} a resident of?",
        "Where does {name} rent a house?", "Which city did {name} move to?",
        "What is the home city of {name}?",
        "According to the census, where does {name} live?", "Which town does {name} live in?",
        "Where can {name} be found at home?", "What city does {name} reside in?",
        "Where has {name} made a home?",
    ),
    "job": (
        "What does {name} do at work?", "What does {name} work as these days?",
        "What line of work is {name} in?", "Tell me {name}'s job.",
        "How does {name} earn a living?",
        "What kind of work does {name} do?", "Name the occupation of {name}.", "What was {name} taken on as?",
        "What did {name} train as?", "What is the job of {name}?",
        "According to the staff list, what does {name} do?",
        "{name} works in which job?", "What is {name} by profession?",
        "What is {name}'s line of work?",
    ),
    "pet": (
        "Which pet does {name} own?",
        "Which animal did {name} adopt?",
        "Tell me what pet {name} has.", "What does {name} keep as a pet?",
        "What animal does {name} feed every morning?",
        "What is {name}'s companion animal?", "Which animal is {name}'s pet?",
        "What sort of pet does {name} keep?", "What pet is {name} the owner of?",
        "What does {name} have as a pet?", "Which creature does {name} look after?",
        "{name} owns which pet?", "What pet was {name} given?",
        "What animal does {name} take care of?",
    ),
    "colour": (
        "Which colour does {name} love most?", "What colour does {name} like most?",
        "What is the favourite colour of {name}?", "Which colour is {name}'s favourite?",
        "Tell me {name}'s favourite colour.",
        "What is {name}'s best-loved colour?", "Which colour pleases {name} most?",
        "What colour is {name} fond of?",
        "What colour does {name} choose when given the choice?", "Of all colours, which does {name} like most?",
        "What is {name}'s top colour?", "Which colour does {name} have a soft spot for?",
        "What colour does {name} love above all others?",
        "According to friends, what colour does {name} like best?", "{name}'s favourite colour is what?",
        "What colour does {name} go for?", "Which colour does {name} wear most often?",
        "Which colour is {name} a fan of?",
    ),
    "age": (
        "How old did {name} turn this year?", "Tell me {name}'s age.", "What age has {name} reached?",
        "According to the register, how old is {name}?", "What is {name}'s current age?",
        "What age does the form give for {name}?", "How old is {name} this year?",
        "What age is listed for {name}?", "{name} is how old?", "Give {name}'s age.",
        "What is {name}'s age in years?",
        "How old is {name}, exactly?", "What age did {name} last turn?",
    ),
}
