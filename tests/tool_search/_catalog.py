"""A catalog of HTTP tools with varied descriptions, and paraphrased queries for them.

Shared by the ranking tests and `python -m tests.bench.tool_search`.
"""

from typing import Any

from core.tools.spec import ToolSpec

# name: (description, parameter names)
TOOLS: dict[str, tuple[str, list[str]]] = {
    "weather_forecast": (
        "Current conditions and a 5-day forecast (temperature, rain, wind) for a city.",
        ["city", "units"],
    ),
    "currency_convert": (
        "Convert an amount of money from one currency to another at today's exchange rate.",
        ["amount", "source", "target"],
    ),
    "exchange_rate_history": (
        "Historical foreign exchange rates between two currencies for a date range.",
        ["base", "quote", "start", "end"],
    ),
    "stock_quote": (
        "Latest share price, day change and volume of a company listed on a stock exchange.",
        ["ticker"],
    ),
    "crypto_price": (
        "Spot price of a cryptocurrency such as bitcoin or ether in US dollars.",
        ["coin"],
    ),
    "translate_text": (
        "Translate text from one language into another, e.g. English to Spanish.",
        ["text", "target_language"],
    ),
    "detect_language": ("Identify which language a piece of text is written in.", ["text"]),
    "send_email": (
        "Send an email message to one or more recipients with a subject and body.",
        ["to", "subject", "body"],
    ),
    "send_sms": ("Send a short text message to a mobile phone number.", ["phone", "message"]),
    "slack_post_message": (
        "Post a message to a Slack channel so the team sees it.",
        ["channel", "text"],
    ),
    "calendar_create_event": (
        "Schedule a meeting or appointment on the user's calendar with attendees.",
        ["title", "start", "end", "attendees"],
    ),
    "calendar_list_events": (
        "List the events on the user's calendar for a given day or week.",
        ["day"],
    ),
    "web_search": (
        "Search the public web and return the top result links with snippets.",
        ["query"],
    ),
    "wikipedia_summary": (
        "Short encyclopedia summary of a topic, person or place from Wikipedia.",
        ["title"],
    ),
    "geocode_address": (
        "Turn a street address into latitude and longitude coordinates.",
        ["address"],
    ),
    "reverse_geocode": (
        "Find the street address nearest to a latitude/longitude point.",
        ["lat", "lon"],
    ),
    "route_directions": (
        "Driving, walking or transit directions and travel time between two places.",
        ["origin", "destination", "mode"],
    ),
    "flight_status": (
        "Departure and arrival status, gate and delays of a flight by flight number.",
        ["flight_number", "date"],
    ),
    "hotel_search": (
        "Find hotels with free rooms in a city for given check-in and check-out dates.",
        ["city", "check_in", "check_out"],
    ),
    "restaurant_booking": (
        "Reserve a table at a restaurant for a number of guests at a time.",
        ["restaurant", "time", "guests"],
    ),
    "jira_create_issue": (
        "Create a ticket in the Jira issue tracker to report a bug or request a feature.",
        ["project", "summary", "description"],
    ),
    "github_list_pull_requests": ("List open pull requests of a GitHub repository.", ["repo"]),
    "s3_upload_file": (
        "Upload a file to an Amazon S3 storage bucket.",
        ["bucket", "key", "content"],
    ),
    "image_resize": (
        "Resize or crop an image to the given width and height in pixels.",
        ["image_url", "width", "height"],
    ),
    "image_ocr": (
        "Extract the printed or handwritten text from a photo or scanned image.",
        ["image_url"],
    ),
    "speech_to_text": (
        "Transcribe spoken words in an audio recording into written text.",
        ["audio_url"],
    ),
    "text_to_speech": (
        "Read text aloud: synthesize natural-sounding speech audio from text.",
        ["text", "voice"],
    ),
    "sentiment_analysis": (
        "Tell whether a review or comment is positive, negative or neutral.",
        ["text"],
    ),
    "summarize_document": ("Write a short summary of a long document or article.", ["url"]),
    "dictionary_define": ("Definitions, pronunciation and synonyms of an English word.", ["word"]),
    "news_headlines": (
        "Today's top news headlines, optionally for one country or topic.",
        ["country", "topic"],
    ),
    "sports_scores": (
        "Live and final scores of football, basketball and other matches.",
        ["league", "date"],
    ),
    "unit_convert": (
        "Convert measurements between units: miles to kilometres, pounds to kilograms, Fahrenheit to Celsius.",
        ["value", "from_unit", "to_unit"],
    ),
    "nutrition_facts": ("Calories, protein, fat and carbohydrates of a food or dish.", ["food"]),
    "recipe_search": (
        "Find cooking recipes by ingredients you have or by dish name.",
        ["ingredients"],
    ),
    "movie_info": ("Plot, cast, release year and ratings of a film.", ["title"]),
    "book_lookup": ("Look up a book by ISBN or title: author, publisher, page count.", ["isbn"]),
    "track_package": (
        "Where a parcel is now and when it will be delivered, by courier tracking number.",
        ["tracking_number", "carrier"],
    ),
    "ip_geolocation": ("Country, city and network owner of an IP address.", ["ip"]),
    "dns_lookup": (
        "Resolve DNS records (A, AAAA, MX, TXT) of a domain name.",
        ["domain", "record_type"],
    ),
    "ssl_certificate_check": (
        "Check a website's TLS certificate: issuer and expiry date.",
        ["host"],
    ),
    "uptime_check": (
        "Ping a URL to see whether a website is up or down and how fast it answers.",
        ["url"],
    ),
    "create_invoice": (
        "Create and send an invoice to a customer for an amount due.",
        ["customer", "amount", "due_date"],
    ),
    "refund_payment": (
        "Refund a card payment to a customer, fully or partly.",
        ["payment_id", "amount"],
    ),
    "crm_customer_lookup": (
        "Find a customer's account, contact details and order history in the CRM.",
        ["email"],
    ),
    "support_ticket_create": (
        "Open a customer support case for a complaint or question.",
        ["customer", "subject", "details"],
    ),
    "sql_query": (
        "Run a read-only SQL query against the analytics database and return rows.",
        ["sql"],
    ),
    "qr_code_generate": ("Generate a QR code image that encodes a link or text.", ["data"]),
    "url_shorten": ("Make a short link that redirects to a long URL.", ["url"]),
    "password_strength": ("Rate how strong a password is and suggest improvements.", ["password"]),
}

# Paraphrased needs (no tool name in them) and the tool that should answer each.
QUERIES: dict[str, str] = {
    "what's the temperature outside in Paris": "weather_forecast",
    "how much is 100 dollars in euros": "currency_convert",
    "put this sentence into Spanish": "translate_text",
    "let my team know in our chat channel": "slack_post_message",
    "where is my parcel": "track_package",
    "coordinates of a street address": "geocode_address",
    "report a bug": "jira_create_issue",
    "transcribe an audio recording": "speech_to_text",
    "is the website down": "uptime_check",
    "give a customer their money back": "refund_payment",
    "how many calories are in an apple": "nutrition_facts",
    "book a table for dinner": "restaurant_booking",
    "set up a meeting with Bob tomorrow": "calendar_create_event",
    "read the text in this scanned page": "image_ocr",
    "is my plane late": "flight_status",
    "what does the word ephemeral mean": "dictionary_define",
    "price of bitcoin": "crypto_price",
    "how far is it to drive from Lyon to Nice": "route_directions",
    "who is the author of this ISBN": "book_lookup",
    "is this review happy or angry": "sentiment_analysis",
    "when does the certificate of example.com expire": "ssl_certificate_check",
    "text my mom": "send_sms",
}


def http_spec(description: str, params: list[str], host: str = "api.example.com") -> ToolSpec:
    """An HTTP tool spec with string parameters (the first one required)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {p: {"type": "string"} for p in params},
        "required": params[:1],
    }
    return ToolSpec(
        kind="http",
        description=description,
        input_schema=schema,
        config={"url_template": f"https://{host}/v1/{{{params[0]}}}", "method": "GET"},
    )
