"""The function-calling benchmark's dataset: everyday functions and 155 questions.

Written for Colony in the style of the Berkeley Function Calling Leaderboard (BFCL):

- single (50): one function is offered and the question clearly needs it;
- multiple (40): two to four functions are offered and exactly one fits;
- parallel (25): the question needs two or three calls, of one function or several;
- irrelevance (40): functions are offered but none fits; the right reply is an answer.

A gold call maps each argument to its acceptable values (BFCL's format). `""` among
them means the argument may be omitted; an optional argument whose list has no `""`
must be given. Values are stated in the questions, so a question has one right call
up to spelling (listed) and case (the checker ignores it).
"""

from dataclasses import dataclass
from typing import Any, Literal, cast

Category = Literal["single", "multiple", "parallel", "irrelevance"]
CATEGORIES: tuple[Category, ...] = ("single", "multiple", "parallel", "irrelevance")

OMIT = ""
"""Among an argument's acceptable values: the argument may be left out."""

GoldCall = dict[str, dict[str, list[Any]]]
"""`{function name: {argument: [acceptable values]}}`, one call."""


@dataclass(frozen=True)
class Function:
    """A function offered to the model: name, description, JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One question, the functions offered with it and the calls that answer it."""

    id: str
    category: Category
    question: str
    functions: tuple[str, ...]
    gold: tuple[GoldCall, ...]  # empty for irrelevance: the right reply makes no call


# -- schema helpers --------------------------------------------------------------------


def _s(description: str, enum: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": description, **extra}
    if enum is not None:
        schema["enum"] = enum
    return schema


def _i(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "description": description, **extra}


def _n(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "number", "description": description, **extra}


def _b(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "boolean", "description": description, **extra}


def _a(items: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "array", "items": items, "description": description}


def _fn(
    name: str, description: str, properties: dict[str, dict[str, Any]], *required: str
) -> Function:
    params: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        params["required"] = list(required)
    return Function(name, description, params)


_TEMP = ["celsius", "fahrenheit"]
_DATE = "Date as YYYY-MM-DD."
_CURRENCY = "Three-letter ISO 4217 currency code, e.g. USD."
_TZ = "IANA time zone name, e.g. Europe/Paris."

FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        _fn("get_current_weather", "Get the current weather in a location.", {
            "location": _s("City name, e.g. San Francisco."),
            "unit": _s("Temperature unit.", _TEMP, default="celsius"),
        }, "location"),
        _fn("get_weather_forecast", "Get the daily weather forecast for a location.", {
            "location": _s("City name."),
            "days": _i("Number of days to forecast (1-14).", minimum=1, maximum=14),
            "include_hourly": _b("Whether to include hourly details.", default=False),
        }, "location", "days"),
        _fn("get_air_quality", "Get the current air quality index of a city.", {
            "city": _s("City name."),
        }, "city"),
        _fn("convert_units", "Convert a quantity of length, mass or volume between units.", {
            "value": _n("The quantity to convert."),
            "from_unit": _s("Unit to convert from, e.g. km, mi, kg, lb, l, gal."),
            "to_unit": _s("Unit to convert to."),
        }, "value", "from_unit", "to_unit"),
        _fn("convert_temperature", "Convert a temperature between scales.", {
            "value": _n("The temperature to convert."),
            "from_scale": _s("Scale of the value.", ["celsius", "fahrenheit", "kelvin"]),
            "to_scale": _s("Scale to convert to.", ["celsius", "fahrenheit", "kelvin"]),
        }, "value", "from_scale", "to_scale"),
        _fn("calculate", "Evaluate an arithmetic expression.", {
            "expression": _s("The expression, e.g. (2 + 3) * 4."),
        }, "expression"),
        _fn("convert_currency", "Convert an amount of money from one currency to another.", {
            "amount": _n("Amount of money to convert."),
            "from_currency": _s(_CURRENCY),
            "to_currency": _s(_CURRENCY),
        }, "amount", "from_currency", "to_currency"),
        _fn("get_exchange_rate", "Get the current exchange rate between two currencies.", {
            "base": _s(_CURRENCY),
            "target": _s(_CURRENCY),
        }, "base", "target"),
        _fn("get_time_in_timezone", "Get the current local time in a time zone.", {
            "timezone": _s(_TZ),
        }, "timezone"),
        _fn("convert_time_zone", "Convert a clock time from one time zone to another.", {
            "time": _s("Clock time as HH:MM (24-hour)."),
            "from_timezone": _s(_TZ),
            "to_timezone": _s(_TZ),
        }, "time", "from_timezone", "to_timezone"),
        _fn("web_search", "Search the web and return the top results.", {
            "query": _s("The search query."),
            "num_results": _i("How many results to return.", default=5),
        }, "query"),
        _fn("get_news_headlines", "Get the latest news headlines on a topic.", {
            "topic": _s("Topic of the news.",
                        ["business", "technology", "sports", "science", "health", "world"]),
            "country": _s("Two-letter country code, e.g. US."),
            "limit": _i("Maximum number of headlines.", default=10),
        }, "topic"),
        _fn("send_email", "Send an email.", {
            "to": _a({"type": "string"}, "Recipient email addresses."),
            "subject": _s("Subject line."),
            "body": _s("Body text."),
            "cc": _a({"type": "string"}, "Addresses to copy."),
        }, "to", "subject", "body"),
        _fn("send_sms", "Send a text message to a phone number.", {
            "phone_number": _s("Phone number in international format, e.g. +15551234567."),
            "message": _s("Text of the message."),
        }, "phone_number", "message"),
        _fn("create_calendar_event", "Create an event in the user's calendar.", {
            "title": _s("Title of the event."),
            "date": _s(_DATE),
            "start_time": _s("Start time as HH:MM (24-hour)."),
            "duration_minutes": _i("Length of the event in minutes."),
            "attendees": _a({"type": "string"}, "Email addresses of the attendees."),
        }, "title", "date", "start_time", "duration_minutes"),
        _fn("set_reminder", "Set a reminder at a time of day.", {
            "message": _s("What to be reminded of."),
            "time": _s("Time as HH:MM (24-hour)."),
            "repeat": _s("How often to repeat.", ["none", "daily", "weekly"], default="none"),
        }, "message", "time"),
        _fn("create_todo", "Add an item to the user's to-do list.", {
            "title": _s("The task."),
            "priority": _s("Priority.", ["low", "medium", "high"], default="medium"),
            "due_date": _s(_DATE),
        }, "title"),
        _fn("factorial", "Compute the factorial of a non-negative integer.", {
            "n": _i("The number.", minimum=0),
        }, "n"),
        _fn("is_prime", "Check whether an integer is a prime number.", {
            "n": _i("The number to check."),
        }, "n"),
        _fn("gcd", "Greatest common divisor of two integers.", {
            "a": _i("First integer."),
            "b": _i("Second integer."),
        }, "a", "b"),
        _fn("lcm", "Least common multiple of two integers.", {
            "a": _i("First integer."),
            "b": _i("Second integer."),
        }, "a", "b"),
        _fn("fibonacci", "Return the first n Fibonacci numbers.", {
            "n": _i("How many numbers.", minimum=1),
        }, "n"),
        _fn("power", "Raise a number to a power.", {
            "base": _n("The base."),
            "exponent": _n("The exponent."),
        }, "base", "exponent"),
        _fn("solve_quadratic", "Solve a*x^2 + b*x + c = 0 for x.", {
            "a": _n("Coefficient of x^2."),
            "b": _n("Coefficient of x."),
            "c": _n("Constant term."),
        }, "a", "b", "c"),
        _fn("circle_area", "Area of a circle from its radius.", {
            "radius": _n("Radius of the circle."),
            "unit": _s("Unit of the radius, e.g. cm."),
        }, "radius"),
        _fn("percentage", "What percentage one number is of another.", {
            "part": _n("The part."),
            "whole": _n("The whole."),
        }, "part", "whole"),
        _fn("average", "Arithmetic mean of a list of numbers.", {
            "numbers": _a({"type": "number"}, "The numbers."),
        }, "numbers"),
        _fn("sort_numbers", "Sort a list of numbers.", {
            "numbers": _a({"type": "number"}, "The numbers to sort."),
            "descending": _b("Sort from largest to smallest.", default=False),
        }, "numbers"),
        _fn("compound_interest", "Final balance of an investment with compound interest.", {
            "principal": _n("Initial amount."),
            "rate": _n("Annual interest rate as a fraction, e.g. 0.05 for 5%."),
            "years": _i("Number of years."),
            "compounds_per_year": _i("Compounding periods per year.", default=1),
        }, "principal", "rate", "years"),
        _fn("calculate_tip", "Tip for a restaurant bill, optionally split between people.", {
            "bill_amount": _n("Total of the bill."),
            "tip_percent": _n("Tip in percent, e.g. 15."),
            "split": _i("Number of people sharing the bill.", default=1),
        }, "bill_amount", "tip_percent"),
        _fn("calculate_bmi", "Body mass index from weight and height.", {
            "weight_kg": _n("Weight in kilograms."),
            "height_cm": _n("Height in centimetres."),
        }, "weight_kg", "height_cm"),
        _fn("reverse_string", "Reverse a string.", {
            "text": _s("The text to reverse."),
        }, "text"),
        _fn("count_words", "Count the words in a text.", {
            "text": _s("The text."),
        }, "text"),
        _fn("change_case", "Change the letter case of a text.", {
            "text": _s("The text."),
            "case": _s("The case to convert to.", ["upper", "lower", "title"]),
        }, "text", "case"),
        _fn("check_palindrome", "Check whether a text reads the same backwards.", {
            "text": _s("The text to check."),
        }, "text"),
        _fn("translate_text", "Translate text into another language.", {
            "text": _s("The text to translate."),
            "target_language": _s("Language to translate into, e.g. French."),
            "source_language": _s("Language of the text; detected when omitted."),
        }, "text", "target_language"),
        _fn("define_word", "Look up the dictionary definition of a word.", {
            "word": _s("The word."),
        }, "word"),
        _fn("get_stock_price", "Get the latest price of a stock.", {
            "symbol": _s("Ticker symbol, e.g. AAPL."),
        }, "symbol"),
        _fn("find_restaurants", "Find restaurants near a location.", {
            "location": _s("City or neighbourhood."),
            "cuisine": _s("Type of food, e.g. Thai."),
            "max_price": _i("Highest price level, 1 (cheap) to 4 (expensive).",
                            minimum=1, maximum=4),
            "open_now": _b("Only restaurants open now."),
        }, "location"),
        _fn("get_directions", "Get directions between two places.", {
            "origin": _s("Starting point."),
            "destination": _s("Destination."),
            "mode": _s("Travel mode.", ["driving", "walking", "bicycling", "transit"],
                       default="driving"),
        }, "origin", "destination"),
        _fn("get_distance", "Distance between two places.", {
            "origin": _s("Starting place."),
            "destination": _s("Destination."),
            "unit": _s("Unit of the distance.", ["km", "miles"]),
        }, "origin", "destination", "unit"),
        _fn("search_flights", "Search for flights on a date.", {
            "origin": _s("Departure airport IATA code, e.g. JFK."),
            "destination": _s("Arrival airport IATA code."),
            "date": _s(_DATE),
            "passengers": _i("Number of passengers.", minimum=1),
            "cabin": _s("Cabin class.", ["economy", "premium_economy", "business", "first"],
                        default="economy"),
        }, "origin", "destination", "date", "passengers"),
        _fn("play_music", "Play music on the user's speaker.", {
            "artist": _s("Artist to play."),
            "song": _s("Song title."),
            "shuffle": _b("Shuffle the artist's songs.", default=False),
        }, "artist"),
        _fn("set_thermostat", "Set the thermostat's target temperature.", {
            "temperature": _n("Target temperature."),
            "unit": _s("Temperature unit.", _TEMP),
            "room": _s("Room name, e.g. kitchen."),
        }, "temperature", "unit"),
        _fn("generate_password", "Generate a random password.", {
            "length": _i("Number of characters.", minimum=4, maximum=128),
            "include_symbols": _b("Include symbols such as !?#."),
            "include_numbers": _b("Include digits.", default=True),
        }, "length", "include_symbols"),
        _fn("roll_dice", "Roll dice and return the results.", {
            "sides": _i("Sides per die.", minimum=2),
            "count": _i("Number of dice.", default=1),
        }, "sides"),
        _fn("random_number", "Pick a random integer between two bounds, inclusive.", {
            "min": _i("Lower bound."),
            "max": _i("Upper bound."),
        }, "min", "max"),
        _fn("get_population", "Population of a country in a year.", {
            "country": _s("Country name."),
            "year": _i("The year."),
        }, "country", "year"),
        _fn("get_holidays", "Public holidays of a country in a year.", {
            "country": _s("Country name."),
            "year": _i("The year."),
        }, "country", "year"),
        _fn("get_movie_info", "Look up a movie: director, cast, rating.", {
            "title": _s("Title of the movie."),
            "year": _i("Release year, to tell remakes apart."),
        }, "title"),
        _fn("days_between", "Number of days between two dates.", {
            "start_date": _s(_DATE),
            "end_date": _s(_DATE),
        }, "start_date", "end_date"),
        _fn("get_day_of_week", "Day of the week of a date.", {
            "date": _s(_DATE),
        }, "date"),
        _fn("calculate_age", "Age in years of someone born on a date.", {
            "birth_date": _s(_DATE),
            "on_date": _s("Date to compute the age on, YYYY-MM-DD; today when omitted."),
        }, "birth_date"),
        _fn("shorten_url", "Create a short link for a URL.", {
            "url": _s("The long URL."),
        }, "url"),
        _fn("track_package", "Track a parcel with its carrier.", {
            "tracking_number": _s("The tracking number."),
            "carrier": _s("The carrier.", ["ups", "fedex", "dhl", "usps"]),
        }, "tracking_number", "carrier"),
        _fn("get_recipe", "Find a recipe for a dish.", {
            "dish": _s("Name of the dish."),
            "servings": _i("Number of servings."),
            "vegetarian": _b("Only vegetarian recipes."),
        }, "dish"),
    ]
}  # fmt: skip


# -- cases -----------------------------------------------------------------------------


def call(name: str, **arguments: list[Any]) -> GoldCall:
    """One gold call: each argument with its acceptable values."""
    return {name: arguments}


def _case(id: str, question: str, functions: str, *gold: GoldCall) -> Case:
    category = id.rsplit("_", 1)[0]
    assert category in CATEGORIES, id
    return Case(id, cast(Category, category), question, tuple(functions.split()), gold)


_TEMP_ANY = ["", "celsius", "fahrenheit"]
_KM = ["km", "kilometers", "kilometres", "kilometer", "kilometre"]
_MILES = ["mi", "miles", "mile"]

CASES: tuple[Case, ...] = (
    # -- single: one function, clearly needed ------------------------------------------
    _case("single_01", "What's the weather like in Paris right now?", "get_current_weather",
          call("get_current_weather", location=["Paris", "Paris, France"], unit=_TEMP_ANY)),
    _case("single_02", "What is the current weather in Tokyo in fahrenheit?", "get_current_weather",
          call("get_current_weather", location=["Tokyo", "Tokyo, Japan"], unit=["fahrenheit"])),
    _case("single_03", "Give me a 5-day weather forecast for Berlin.", "get_weather_forecast",
          call("get_weather_forecast", location=["Berlin", "Berlin, Germany"], days=[5],
               include_hourly=["", False])),
    _case("single_04", "Convert 10 kilometers to miles.", "convert_units",
          call("convert_units", value=[10], from_unit=_KM, to_unit=_MILES)),
    _case("single_05", "Calculate 17 * 23.", "calculate",
          call("calculate", expression=["17 * 23", "17*23"])),
    _case("single_06", "Convert 100 USD to EUR.", "convert_currency",
          call("convert_currency", amount=[100], from_currency=["USD"], to_currency=["EUR"])),
    _case("single_07", "What is the exchange rate from GBP to JPY?", "get_exchange_rate",
          call("get_exchange_rate", base=["GBP"], target=["JPY"])),
    _case("single_08", "What time is it now in the Asia/Tokyo time zone?", "get_time_in_timezone",
          call("get_time_in_timezone", timezone=["Asia/Tokyo"])),
    _case("single_09", "Convert 09:30 from America/New_York time to Europe/London time.",
          "convert_time_zone",
          call("convert_time_zone", time=["09:30"], from_timezone=["America/New_York"],
               to_timezone=["Europe/London"])),
    _case("single_10", "Search the web for 'best hiking trails in Colorado'.", "web_search",
          call("web_search", query=["best hiking trails in Colorado"], num_results=["", 5])),
    _case("single_11", "Send an email to alice@example.com with the subject 'Lunch' and the "
          "body 'Are you free at noon?'", "send_email",
          call("send_email", to=[["alice@example.com"]], subject=["Lunch"],
               body=["Are you free at noon?"], cc=["", []])),
    _case("single_12", "Create a calendar event called 'Team sync' on 2025-06-12 at 10:00 for "
          "30 minutes.", "create_calendar_event",
          call("create_calendar_event", title=["Team sync"], date=["2025-06-12"],
               start_time=["10:00"], duration_minutes=[30], attendees=["", []])),
    _case("single_13", "Remind me to call mom at 18:00.", "set_reminder",
          call("set_reminder", message=["call mom"], time=["18:00"], repeat=["", "none"])),
    _case("single_14", "What is the factorial of 7?", "factorial", call("factorial", n=[7])),
    _case("single_15", "Is 97 a prime number?", "is_prime", call("is_prime", n=[97])),
    _case("single_16", "Find the greatest common divisor of 48 and 180.", "gcd",
          call("gcd", a=[48], b=[180])),
    _case("single_17", "What is the least common multiple of 12 and 18?", "lcm",
          call("lcm", a=[12], b=[18])),
    _case("single_18", "Give me the first 10 Fibonacci numbers.", "fibonacci",
          call("fibonacci", n=[10])),
    _case("single_19", "Solve the quadratic equation with a=1, b=-3 and c=2.", "solve_quadratic",
          call("solve_quadratic", a=[1], b=[-3], c=[2])),
    _case("single_20", "What is the area of a circle with a radius of 4.5 cm?", "circle_area",
          call("circle_area", radius=[4.5], unit=["", "cm"])),
    _case("single_21", "Compute the final balance of 5000 invested at an annual rate of 0.04 for "
          "10 years, compounded 12 times per year.", "compound_interest",
          call("compound_interest", principal=[5000], rate=[0.04], years=[10],
               compounds_per_year=[12])),
    _case("single_22", "How much is a 15% tip on a bill of 84.50?", "calculate_tip",
          call("calculate_tip", bill_amount=[84.5], tip_percent=[15], split=["", 1])),
    _case("single_23", "Calculate the BMI of someone who weighs 70 kg and is 175 cm tall.",
          "calculate_bmi", call("calculate_bmi", weight_kg=[70], height_cm=[175])),
    _case("single_24", "Reverse the string 'colony'.", "reverse_string",
          call("reverse_string", text=["colony"])),
    _case("single_25", "How many words are in the sentence 'The quick brown fox jumps over the "
          "lazy dog'?", "count_words",
          call("count_words", text=["The quick brown fox jumps over the lazy dog"])),
    _case("single_26", "Convert 'hello world' to upper case.", "change_case",
          call("change_case", text=["hello world"], case=["upper"])),
    _case("single_27", "Translate 'Good morning' into Spanish.", "translate_text",
          call("translate_text", text=["Good morning"], target_language=["Spanish", "es"],
               source_language=["", "English", "en"])),
    _case("single_28", "What is the current stock price of AAPL?", "get_stock_price",
          call("get_stock_price", symbol=["AAPL"])),
    _case("single_29", "Show me the latest technology news headlines.", "get_news_headlines",
          call("get_news_headlines", topic=["technology"], country=[""], limit=["", 10])),
    _case("single_30", "Find Italian restaurants in Chicago that are open now.", "find_restaurants",
          call("find_restaurants", location=["Chicago", "Chicago, IL"], cuisine=["Italian"],
               max_price=[""], open_now=[True])),
    _case("single_31", "Give me walking directions from the Louvre to the Eiffel Tower.",
          "get_directions",
          call("get_directions", origin=["the Louvre", "Louvre"],
               destination=["the Eiffel Tower", "Eiffel Tower"], mode=["walking"])),
    _case("single_32", "Search for flights from JFK to LAX on 2025-07-04 for 2 passengers.",
          "search_flights",
          call("search_flights", origin=["JFK"], destination=["LAX"], date=["2025-07-04"],
               passengers=[2], cabin=["", "economy"])),
    _case("single_33", "How far is it from Madrid to Barcelona in km?", "get_distance",
          call("get_distance", origin=["Madrid"], destination=["Barcelona"], unit=["km"])),
    _case("single_34", "Add a high priority item 'Renew passport' to my to-do list.",
          "create_todo",
          call("create_todo", title=["Renew passport"], priority=["high"], due_date=[""])),
    _case("single_35", "Play Bohemian Rhapsody by Queen.", "play_music",
          call("play_music", artist=["Queen"], song=["Bohemian Rhapsody"], shuffle=["", False])),
    _case("single_36", "Set the thermostat in the living room to 21 degrees celsius.",
          "set_thermostat",
          call("set_thermostat", temperature=[21], unit=["celsius"], room=["living room"])),
    _case("single_37", "Generate a 16-character password that includes symbols.",
          "generate_password",
          call("generate_password", length=[16], include_symbols=[True],
               include_numbers=["", True])),
    _case("single_38", "Sort the numbers 5, 3, 9 and 1 in descending order.", "sort_numbers",
          call("sort_numbers", numbers=[[5, 3, 9, 1]], descending=[True])),
    _case("single_39", "What is the average of 4, 8, 15, 16, 23 and 42?", "average",
          call("average", numbers=[[4, 8, 15, 16, 23, 42]])),
    _case("single_40", "Roll two six-sided dice.", "roll_dice",
          call("roll_dice", sides=[6], count=[2])),
    _case("single_41", "Pick a random number between 1 and 100.", "random_number",
          call("random_number", min=[1], max=[100])),
    _case("single_42", "What was the population of Japan in 2020?", "get_population",
          call("get_population", country=["Japan"], year=[2020])),
    _case("single_43", "Define the word 'serendipity'.", "define_word",
          call("define_word", word=["serendipity"])),
    _case("single_44", "Look up the movie Inception from 2010.", "get_movie_info",
          call("get_movie_info", title=["Inception"], year=[2010])),
    _case("single_45", "How many days are there between 2025-01-01 and 2025-03-15?",
          "days_between",
          call("days_between", start_date=["2025-01-01"], end_date=["2025-03-15"])),
    _case("single_46", "What day of the week was 1969-07-20?", "get_day_of_week",
          call("get_day_of_week", date=["1969-07-20"])),
    _case("single_47", "Convert 100 degrees fahrenheit to celsius.", "convert_temperature",
          call("convert_temperature", value=[100], from_scale=["fahrenheit"],
               to_scale=["celsius"])),
    _case("single_48", "Shorten the URL https://example.com/articles/2025/colony-launch.",
          "shorten_url",
          call("shorten_url", url=["https://example.com/articles/2025/colony-launch"])),
    _case("single_49", "Text +15551234567 the message 'Running 10 minutes late'.", "send_sms",
          call("send_sms", phone_number=["+15551234567"], message=["Running 10 minutes late"])),
    _case("single_50", "Track my fedex package 748930215566.", "track_package",
          call("track_package", tracking_number=["748930215566"], carrier=["fedex"])),
    # -- multiple: several functions, exactly one fits ----------------------------------
    _case("multiple_01", "What's the 3-day weather forecast for Seattle?",
          "get_current_weather get_weather_forecast get_air_quality",
          call("get_weather_forecast", location=["Seattle", "Seattle, WA"], days=[3],
               include_hourly=["", False])),
    _case("multiple_02", "Convert 50 EUR to CHF.",
          "convert_units convert_temperature convert_currency",
          call("convert_currency", amount=[50], from_currency=["EUR"], to_currency=["CHF"])),
    _case("multiple_03", "What is 3 to the power of 4?", "factorial power is_prime",
          call("power", base=[3], exponent=[4])),
    _case("multiple_04", "Send a text message to +447700900123 saying 'Meeting moved to 3pm'.",
          "send_email send_sms create_calendar_event",
          call("send_sms", phone_number=["+447700900123"], message=["Meeting moved to 3pm"])),
    _case("multiple_05", "If it is 14:00 in Europe/Paris, what time is it in Asia/Singapore?",
          "get_time_in_timezone convert_time_zone",
          call("convert_time_zone", time=["14:00"], from_timezone=["Europe/Paris"],
               to_timezone=["Asia/Singapore"])),
    _case("multiple_06", "Search the web for 'Temporal workflow tutorial'.",
          "web_search get_news_headlines define_word",
          call("web_search", query=["Temporal workflow tutorial"], num_results=["", 5])),
    _case("multiple_07", "Is 221 a prime number?", "gcd lcm is_prime",
          call("is_prime", n=[221])),
    _case("multiple_08", "Remind me to water the plants at 08:00 every day.",
          "create_todo set_reminder create_calendar_event",
          call("set_reminder", message=["water the plants"], time=["08:00"], repeat=["daily"])),
    _case("multiple_09", "What's the stock price of MSFT?",
          "get_stock_price get_exchange_rate convert_currency",
          call("get_stock_price", symbol=["MSFT"])),
    _case("multiple_10", "How far is Boston from New York in miles?",
          "find_restaurants get_directions get_distance",
          call("get_distance", origin=["Boston"], destination=["New York"], unit=["miles"])),
    _case("multiple_11", "Is 'racecar' a palindrome?",
          "reverse_string count_words change_case check_palindrome",
          call("check_palindrome", text=["racecar"])),
    _case("multiple_12", "Translate 'thank you' into Japanese.", "translate_text define_word",
          call("translate_text", text=["thank you"], target_language=["Japanese", "ja"],
               source_language=["", "English", "en"])),
    _case("multiple_13", "Find business class flights from SFO to NRT on 2025-09-01 for 1 "
          "passenger.", "search_flights get_directions get_weather_forecast",
          call("search_flights", origin=["SFO"], destination=["NRT"], date=["2025-09-01"],
               passengers=[1], cabin=["business"])),
    _case("multiple_14", "Set the bedroom thermostat to 68 degrees fahrenheit.",
          "play_music set_thermostat get_news_headlines",
          call("set_thermostat", temperature=[68], unit=["fahrenheit"], room=["bedroom"])),
    _case("multiple_15", "Roll one 20-sided die.", "generate_password random_number roll_dice",
          call("roll_dice", sides=[20], count=["", 1])),
    _case("multiple_16", "Sort the numbers 12, 7, 30 and 2 in ascending order.",
          "average sort_numbers",
          call("sort_numbers", numbers=[[12, 7, 30, 2]], descending=["", False])),
    _case("multiple_17", "Work out a 20% tip on a bill of 56 split between 4 people.",
          "calculate_bmi calculate_tip compound_interest",
          call("calculate_tip", bill_amount=[56], tip_percent=[20], split=[4])),
    _case("multiple_18", "How old is someone born on 1990-05-17?",
          "days_between get_day_of_week calculate_age",
          call("calculate_age", birth_date=["1990-05-17"], on_date=[""])),
    _case("multiple_19", "Who directed the 1975 movie Jaws?",
          "get_population get_holidays get_movie_info",
          call("get_movie_info", title=["Jaws"], year=["", 1975])),
    _case("multiple_20", "Make a short link for https://docs.temporal.io/workflows.",
          "shorten_url web_search",
          call("shorten_url", url=["https://docs.temporal.io/workflows"])),
    _case("multiple_21", "Where is my ups package 1Z999AA10123456784?", "track_package send_email",
          call("track_package", tracking_number=["1Z999AA10123456784"], carrier=["ups"])),
    _case("multiple_22", "Give me a recipe for pancakes for 2 people.",
          "get_recipe find_restaurants",
          call("get_recipe", dish=["pancakes"], servings=[2], vegetarian=[""])),
    _case("multiple_23", "Solve the equation x^2 + 2x - 8 = 0.",
          "circle_area solve_quadratic power",
          call("solve_quadratic", a=[1], b=[2], c=[-8])),
    _case("multiple_24", "What is the factorial of 10?", "fibonacci factorial gcd",
          call("factorial", n=[10])),
    _case("multiple_25", "What's the air quality in Beijing right now?",
          "get_current_weather get_time_in_timezone get_air_quality",
          call("get_air_quality", city=["Beijing"])),
    _case("multiple_26", "Convert 30 degrees celsius to kelvin.",
          "convert_units convert_temperature",
          call("convert_temperature", value=[30], from_scale=["celsius"], to_scale=["kelvin"])),
    _case("multiple_27", "Schedule a 60-minute meeting called 'Budget review' on 2025-10-02 at "
          "14:00 with bob@example.com.", "send_email create_calendar_event",
          call("create_calendar_event", title=["Budget review"], date=["2025-10-02"],
               start_time=["14:00"], duration_minutes=[60], attendees=[["bob@example.com"]])),
    _case("multiple_28", "Get the top 5 sports headlines in country GB.",
          "get_news_headlines web_search get_stock_price",
          call("get_news_headlines", topic=["sports"], country=["GB"], limit=[5])),
    _case("multiple_29", "Convert 'The Old Man and the Sea' to lower case.",
          "change_case translate_text count_words",
          call("change_case", text=["The Old Man and the Sea"], case=["lower"])),
    _case("multiple_30", "Convert 250 CAD to AUD.", "calculate convert_currency",
          call("convert_currency", amount=[250], from_currency=["CAD"], to_currency=["AUD"])),
    _case("multiple_31", "Play music by Daft Punk on shuffle.", "set_reminder send_sms play_music",
          call("play_music", artist=["Daft Punk"], song=[""], shuffle=[True])),
    _case("multiple_32", "What percentage of 80 is 20?", "percentage average power",
          call("percentage", part=[20], whole=[80])),
    _case("multiple_33", "What are the public holidays in Canada in 2025?",
          "get_holidays get_population",
          call("get_holidays", country=["Canada"], year=[2025])),
    _case("multiple_34", "What is the least common multiple of 8 and 14?", "is_prime fibonacci lcm",
          call("lcm", a=[8], b=[14])),
    _case("multiple_35", "How do I get from Central Station to the airport by transit?",
          "get_directions search_flights",
          call("get_directions", origin=["Central Station"],
               destination=["the airport", "airport"], mode=["transit"])),
    _case("multiple_36", "What does the word 'ephemeral' mean?",
          "define_word get_movie_info translate_text", call("define_word", word=["ephemeral"])),
    _case("multiple_37", "Add 'Buy milk' to my to-do list with low priority, due 2025-05-02.",
          "create_todo set_thermostat",
          call("create_todo", title=["Buy milk"], priority=["low"], due_date=["2025-05-02"])),
    _case("multiple_38", "What is the exchange rate from EUR to USD?",
          "get_exchange_rate get_stock_price",
          call("get_exchange_rate", base=["EUR"], target=["USD"])),
    _case("multiple_39", "Create a 12-character password without symbols.",
          "random_number generate_password",
          call("generate_password", length=[12], include_symbols=[False],
               include_numbers=["", True])),
    _case("multiple_40", "Is it raining in London right now?",
          "get_weather_forecast get_current_weather",
          call("get_current_weather", location=["London", "London, UK"], unit=_TEMP_ANY)),
    # -- parallel: two or three calls ---------------------------------------------------
    _case("parallel_01", "What's the current weather in Paris and in Rome?", "get_current_weather",
          call("get_current_weather", location=["Paris", "Paris, France"], unit=_TEMP_ANY),
          call("get_current_weather", location=["Rome", "Rome, Italy"], unit=_TEMP_ANY)),
    _case("parallel_02", "Convert 100 USD to EUR, and 100 USD to GBP.", "convert_currency",
          call("convert_currency", amount=[100], from_currency=["USD"], to_currency=["EUR"]),
          call("convert_currency", amount=[100], from_currency=["USD"], to_currency=["GBP"])),
    _case("parallel_03", "What time is it in America/Chicago, Europe/Berlin and Asia/Kolkata?",
          "get_time_in_timezone",
          call("get_time_in_timezone", timezone=["America/Chicago"]),
          call("get_time_in_timezone", timezone=["Europe/Berlin"]),
          call("get_time_in_timezone", timezone=["Asia/Kolkata"])),
    _case("parallel_04", "What are the factorials of 5 and 6?", "factorial",
          call("factorial", n=[5]), call("factorial", n=[6])),
    _case("parallel_05", "Get the stock prices of AAPL, GOOGL and TSLA.", "get_stock_price",
          call("get_stock_price", symbol=["AAPL"]), call("get_stock_price", symbol=["GOOGL"]),
          call("get_stock_price", symbol=["TSLA"])),
    _case("parallel_06", "Check whether 91 is prime and whether 89 is prime.", "is_prime",
          call("is_prime", n=[91]), call("is_prime", n=[89])),
    _case("parallel_07", "What's the current weather in Sydney, and what time is it in the "
          "Australia/Sydney time zone?", "get_current_weather get_time_in_timezone",
          call("get_current_weather", location=["Sydney", "Sydney, Australia"], unit=_TEMP_ANY),
          call("get_time_in_timezone", timezone=["Australia/Sydney"])),
    _case("parallel_08", "Email carol@example.com with the subject 'Offsite' and the body 'See you "
          "Friday', and create a calendar event 'Offsite' on 2025-08-22 at 09:00 for 480 minutes.",
          "send_email create_calendar_event",
          call("send_email", to=[["carol@example.com"]], subject=["Offsite"],
               body=["See you Friday"], cc=["", []]),
          call("create_calendar_event", title=["Offsite"], date=["2025-08-22"],
               start_time=["09:00"], duration_minutes=[480], attendees=["", []])),
    _case("parallel_09", "Convert 5 miles to km, and convert 20 degrees celsius to fahrenheit.",
          "convert_units convert_temperature",
          call("convert_units", value=[5], from_unit=_MILES, to_unit=_KM),
          call("convert_temperature", value=[20], from_scale=["celsius"],
               to_scale=["fahrenheit"])),
    _case("parallel_10", "Translate 'hello' into French and into German.", "translate_text",
          call("translate_text", text=["hello"], target_language=["French", "fr"],
               source_language=["", "English", "en"]),
          call("translate_text", text=["hello"], target_language=["German", "de"],
               source_language=["", "English", "en"])),
    _case("parallel_11", "What were the populations of Brazil and Mexico in 2022?",
          "get_population",
          call("get_population", country=["Brazil"], year=[2022]),
          call("get_population", country=["Mexico"], year=[2022])),
    _case("parallel_12", "Find both the greatest common divisor and the least common multiple of "
          "24 and 36.", "gcd lcm",
          call("gcd", a=[24], b=[36]), call("lcm", a=[24], b=[36])),
    _case("parallel_13", "Give me 7-day weather forecasts for Oslo and for Stockholm.",
          "get_weather_forecast",
          call("get_weather_forecast", location=["Oslo", "Oslo, Norway"], days=[7],
               include_hourly=["", False]),
          call("get_weather_forecast", location=["Stockholm", "Stockholm, Sweden"], days=[7],
               include_hourly=["", False])),
    _case("parallel_14", "Set two reminders to take my medicine: one at 08:00 and one at 20:00.",
          "set_reminder",
          call("set_reminder", message=["take my medicine", "take medicine"], time=["08:00"],
               repeat=["", "none"]),
          call("set_reminder", message=["take my medicine", "take medicine"], time=["20:00"],
               repeat=["", "none"])),
    _case("parallel_15", "How far is it from Lyon to Marseille in km? Also give me driving "
          "directions from Lyon to Marseille.", "get_directions get_distance",
          call("get_distance", origin=["Lyon"], destination=["Marseille"], unit=["km"]),
          call("get_directions", origin=["Lyon"], destination=["Marseille"],
               mode=["", "driving"])),
    _case("parallel_16", "Define the words 'ubiquitous' and 'laconic'.", "define_word",
          call("define_word", word=["ubiquitous"]), call("define_word", word=["laconic"])),
    _case("parallel_17", "Roll one 12-sided die and pick a random number from 1 to 50.",
          "roll_dice random_number",
          call("roll_dice", sides=[12], count=["", 1]), call("random_number", min=[1], max=[50])),
    _case("parallel_18", "What are the exchange rates from USD to JPY and from USD to CNY?",
          "get_exchange_rate",
          call("get_exchange_rate", base=["USD"], target=["JPY"]),
          call("get_exchange_rate", base=["USD"], target=["CNY"])),
    _case("parallel_19", "Give me the first 8 Fibonacci numbers and the factorial of 8.",
          "fibonacci factorial", call("fibonacci", n=[8]), call("factorial", n=[8])),
    _case("parallel_20", "Search flights for 1 passenger from LHR to CDG on 2025-11-03, and from "
          "CDG to LHR on 2025-11-07.", "search_flights",
          call("search_flights", origin=["LHR"], destination=["CDG"], date=["2025-11-03"],
               passengers=[1], cabin=["", "economy"]),
          call("search_flights", origin=["CDG"], destination=["LHR"], date=["2025-11-07"],
               passengers=[1], cabin=["", "economy"])),
    _case("parallel_21", "Get the business news headlines and the stock price of NVDA.",
          "get_news_headlines get_stock_price",
          call("get_news_headlines", topic=["business"], country=[""], limit=["", 10]),
          call("get_stock_price", symbol=["NVDA"])),
    _case("parallel_22", "Add two to-do items: 'Pay rent' with high priority and 'Call plumber' "
          "with medium priority.", "create_todo",
          call("create_todo", title=["Pay rent"], priority=["high"], due_date=[""]),
          call("create_todo", title=["Call plumber"], priority=["medium"], due_date=[""])),
    _case("parallel_23", "Reverse the string 'temporal' and convert 'durable' to upper case.",
          "reverse_string change_case",
          call("reverse_string", text=["temporal"]),
          call("change_case", text=["durable"], case=["upper"])),
    _case("parallel_24", "What are the areas of a circle of radius 2 and of a circle of radius 3?",
          "circle_area",
          call("circle_area", radius=[2], unit=[""]), call("circle_area", radius=[3], unit=[""])),
    _case("parallel_25", "For Mexico City, give me the air quality, the current weather, and the "
          "local time in the America/Mexico_City time zone.",
          "get_air_quality get_current_weather get_time_in_timezone",
          call("get_air_quality", city=["Mexico City"]),
          call("get_current_weather", location=["Mexico City"], unit=_TEMP_ANY),
          call("get_time_in_timezone", timezone=["America/Mexico_City"])),
    # -- irrelevance: no offered function fits; answer without a call -------------------
    _case("irrelevance_01", "What is the capital of Australia?", "get_current_weather"),
    _case("irrelevance_02", "Who wrote 'Pride and Prejudice'?", "convert_currency"),
    _case("irrelevance_03", "Tell me a short joke about cats.", "calculate"),
    _case("irrelevance_04", "What is the boiling point of water at sea level in celsius?",
          "send_email"),
    _case("irrelevance_05", "Write a haiku about autumn.", "get_stock_price get_exchange_rate"),
    _case("irrelevance_06", "Translate 'good night' into Italian.", "factorial is_prime"),
    _case("irrelevance_07", "Book a table for two at an Italian restaurant tonight.",
          "get_time_in_timezone"),
    _case("irrelevance_08", "What is the square root of 144?", "create_calendar_event"),
    _case("irrelevance_09", "How many legs does a spider have?", "get_directions"),
    _case("irrelevance_10", "What is the chemical symbol for gold?", "play_music"),
    _case("irrelevance_11", "Summarize the plot of Romeo and Juliet in one sentence.",
          "set_thermostat"),
    _case("irrelevance_12", "What's the weather in Madrid today?", "track_package"),
    _case("irrelevance_13", "Convert 5 kilometers to miles.", "get_recipe"),
    _case("irrelevance_14", "What time is it in Tokyo?", "calculate_bmi"),
    _case("irrelevance_15", "What is 15 multiplied by 4?", "translate_text"),
    _case("irrelevance_16", "Send an email to dave@example.com saying hi.",
          "get_movie_info get_news_headlines"),
    _case("irrelevance_17", "What is the tallest mountain in the world?", "roll_dice"),
    _case("irrelevance_18", "How do you say 'thank you' in German?", "shorten_url"),
    _case("irrelevance_19", "Set a reminder for my dentist appointment tomorrow at 9.",
          "generate_password"),
    _case("irrelevance_20", "What is the population of Canada?", "get_holidays"),
    _case("irrelevance_21", "What is the exchange rate of the euro to the dollar?",
          "sort_numbers average"),
    _case("irrelevance_22", "Who painted the Mona Lisa?", "count_words"),
    _case("irrelevance_23", "Recommend a good science fiction book.", "get_air_quality"),
    _case("irrelevance_24", "How many days are in a leap year?", "search_flights"),
    _case("irrelevance_25", "Explain what photosynthesis is in one sentence.",
          "send_sms send_email"),
    _case("irrelevance_26", "Play some jazz music.", "find_restaurants"),
    _case("irrelevance_27", "Calculate 12 percent of 250.", "get_population get_holidays"),
    _case("irrelevance_28", "What's the stock price of Amazon?", "create_todo"),
    _case("irrelevance_29", "What is the largest planet in our solar system?",
          "check_palindrome reverse_string"),
    _case("irrelevance_30", "Convert 20 US dollars to euros.", "convert_temperature"),
    _case("irrelevance_31", "In what year did World War II end?", "get_distance"),
    _case("irrelevance_32", "Define the word 'petrichor'.", "compound_interest calculate_tip"),
    _case("irrelevance_33", "What is the speed of light in a vacuum?",
          "get_current_weather get_weather_forecast"),
    _case("irrelevance_34", "Turn the living room thermostat to 22 degrees.", "get_day_of_week"),
    _case("irrelevance_35", "Track my DHL package 1234567890.", "lcm gcd"),
    _case("irrelevance_36", "Hello! How are you today?", "get_stock_price"),
    _case("irrelevance_37", "What is the freezing point of water in fahrenheit?", "set_reminder"),
    _case("irrelevance_38", "How many continents are there?", "get_recipe find_restaurants"),
    _case("irrelevance_39", "Shorten the URL https://example.org/a/very/long/path.",
          "solve_quadratic"),
    _case("irrelevance_40", "Name the three primary colors.", "days_between"),
)  # fmt: skip
"""Every case, in a fixed order: ids never change meaning (results are compared by id)."""
