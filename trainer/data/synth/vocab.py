"""Word lists of the synthetic SOTAB table generator.

Plain data only: name parts, enumerations and phrase fragments that Faker does not provide, chosen to resemble
the values seen in real SOTAB v2 columns. Locale-dependent values (people, cities, streets, phones) come from
Faker instead (`context.py`); the deliberately ambiguous values live with their injection (`ambiguity.py`).
"""
from __future__ import annotations

US_STATES = (("AL", "Alabama"), ("AK", "Alaska"), ("AZ", "Arizona"), ("CA", "California"), ("CO", "Colorado"),
             ("CT", "Connecticut"), ("FL", "Florida"), ("GA", "Georgia"), ("HI", "Hawaii"),
             ("IL", "Illinois"), ("MA", "Massachusetts"), ("MD", "Maryland"), ("MI", "Michigan"),
             ("MN", "Minnesota"), ("NC", "North Carolina"), ("NJ", "New Jersey"), ("NY", "New York"),
             ("OH", "Ohio"), ("OR", "Oregon"), ("PA", "Pennsylvania"), ("TX", "Texas"), ("VA", "Virginia"),
             ("WA", "Washington"), ("WI", "Wisconsin"))
OTHER_REGIONS = ("ON", "BC", "QC", "NSW", "QLD", "SA", "Tamil Nadu", "Maharashtra", "Bavaria",
                 "Île-de-France", "Andalucía", "Lombardia", "Noord-Holland", "Jawa Barat", "Ontario",
                 "Queensland", "Scotland")

COUNTRIES = ("United States", "United Kingdom", "Germany", "France", "Spain", "Italy", "Netherlands",
             "Brazil", "Japan", "Canada", "Australia", "India", "Mexico", "Belgium", "Switzerland", "Austria",
             "Ireland", "Sweden", "Portugal", "South Africa", "New Zealand", "Greece", "Poland", "Denmark",
             "China")
COUNTRY_CODES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "JP", "CA", "AU", "IN", "MX", "BE", "CH",
                 "KH")
COUNTRY_SHORT = ("USA", "UK", "U.S.", "Deutschland", "España", "Italia", "Nederland", "Brasil", "日本")

LANGUAGES = ("English", "French", "German", "Spanish", "Italian", "Dutch", "Portuguese", "Japanese",
             "Chinese", "Russian", "Hindi", "Arabic", "Swedish", "Polish")
LANGUAGE_NATIVE = ("Inglês", "Português", "Deutsch", "Français", "Español", "Italiano", "Nederlands",
                   "日本語", "Englisch", "Anglais")
LANGUAGE_CODES = ("en", "fr", "de", "es", "it", "nl", "pt", "ja", "en-US", "en-GB", "fr-FR", "de-DE", "pt-BR")

CURRENCIES = (("USD", "$"), ("EUR", "€"), ("GBP", "£"), ("JPY", "¥"), ("CAD", "CA$"), ("AUD", "A$"),
              ("BRL", "R$"), ("CHF", "CHF"), ("INR", "₹"), ("HUF", "Ft"), ("SEK", "kr"))

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DAY_ABBR = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
DAY_SHORT = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DAYS_DE = ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag")
DAYS_FR = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
MONTHS_DE = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
             "November", "Dezember")
MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
             "novembre", "décembre")
MONTHS_ES = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre",
             "octubre", "noviembre", "diciembre")

# Schema.org / GoodRelations enumerations.
AVAILABILITY = ("InStock", "InStock", "InStock", "OutOfStock", "PreOrder", "LimitedAvailability", "SoldOut",
                "Discontinued", "OnlineOnly", "InStoreOnly", "BackOrder")
CONDITION = ("NewCondition", "NewCondition", "NewCondition", "UsedCondition", "RefurbishedCondition",
             "DamagedCondition")
ATTENDANCE = ("OfflineEventAttendanceMode", "OfflineEventAttendanceMode", "OnlineEventAttendanceMode",
              "MixedEventAttendanceMode")
EVENT_STATUS = ("EventScheduled", "EventScheduled", "EventScheduled", "EventCancelled", "EventPostponed",
                "EventRescheduled", "EventMovedOnline")
BOOK_FORMATS = ("Paperback", "Hardcover", "EBook", "AudiobookFormat", "GraphicNovel")
BOOK_FORMAT_TEXT = ("Paperback", "Hardcover", "eBook", "Kindle Edition", "Perfect Bound", "Digital",
                    "Rústica", "Tapa dura", "Broché", "Taschenbuch", "Gebunden", "Mass Market Paperback",
                    "Spiral-bound", "Board book", "Audio CD", "EBook/DAISY202")
DIETS = ("VeganDiet", "VegetarianDiet", "GlutenFreeDiet", "LowLactoseDiet", "DiabeticDiet", "LowFatDiet",
         "LowCalorieDiet", "LowSaltDiet", "HalalDiet", "KosherDiet", "HinduDiet")
DELIVERY = ("DeliveryModeOwnFleet", "DeliveryModeMail", "DeliveryModeFreight", "DeliveryModePickUp",
            "DeliveryModeDirectDownload", "UPS", "DHL", "FederalExpress")
DELIVERY_TEXT = ("Free shipping", "Standard Shipping", "Express Delivery", "In-store pickup",
                 "Livraison à domicile", "Versand per DHL", "Next Day Delivery", "Click & Collect")
PAYMENT_GR = ("Cash", "PayPal", "VISA", "MasterCard", "AmericanExpress", "DirectDebit",
              "ByBankTransferInAdvance", "ByInvoice", "COD", "CheckInAdvance", "GoogleCheckout", "DinersClub",
              "Discover", "JCB")
PAYMENT_TEXT = ("Cash", "Credit Card", "Visa", "MasterCard", "American Express", "Debit Card", "PayPal",
                "Online payments", "Cheque", "Bank card", "Holiday cheques", "Restaurant cheques",
                "Diners Club", "Apple Pay", "Contactless", "Carte Bleue", "Espèces", "Chèques vacances",
                "EC-Karte", "Bar")
GENDERS = ("Male", "Female", "male", "female", "M", "F", "https://schema.org/Male",
           "https://schema.org/Female", "Non-binary", "N/A")
RATINGS_MPAA = ("G", "PG", "PG-13", "R", "NC-17", "NR", "Unrated", "TV-MA", "TV-14", "TV-PG", "M", "MA15+",
                "12A", "15", "18", "FSK 12", "FSK 16", "U/A", "Tous publics")
UNIT_CODES = ("KGM", "GRM", "LBR", "ONZ", "CMT", "MTR", "INH", "MMT", "C62", "H87", "LTR", "MLT", "E14",
              "HUR", "DAY", "MON", "SEC")
UNIT_TEXT = ("Kg", "kg", "grams", "g", "lbs", "oz", "troy oz", "cm", "CMT", "inches", "mm", "pieces", "pcs",
             "per month", "per night", "per person", "Stück", "litre", "ml", "each", "KGM", "Hour")

# Entity name parts.
RESTAURANT_WORDS = ("Grill", "Bistro", "Kitchen", "Pizzeria", "Trattoria", "Café", "Diner", "Brasserie",
                    "Tavern", "Sushi Bar", "Steakhouse", "Cantina", "Noodle House", "Bar & Grill", "Taqueria",
                    "BBQ", "Osteria", "Creperie", "Ramen", "Bakery", "Seafood", "Restaurant", "Grill & Tap")
RESTAURANT_STEMS = ("Golden", "Blue", "Olive", "Lotus", "Red Lantern", "Old Town", "Harbor", "Little Italy",
                    "Sakura", "Casa", "Le Petit", "La Bella", "Smokey", "Green Leaf", "Bamboo", "Urban",
                    "Rustic", "Copper", "Saffron", "Ocean", "Corner", "Sunset", "Mama's", "Uncle Joe's",
                    "El Toro", "Zen")
CUISINES = ("Italian", "Mexican", "Thai", "Japanese", "French", "Indian", "American", "Chinese", "Greek",
            "Mediterranean", "Vietnamese", "Spanish", "Lebanese", "Korean", "Vegan", "Seafood", "Pizza")
HOTEL_WORDS = ("Hotel", "Inn", "Suites", "Resort & Spa", "Lodge", "Guest House", "B&B", "Apartments",
               "Hostel", "Boutique Hotel", "Palace", "Motel", "Aparthotel", "Residence", "Beach Resort",
               "Chalet")
HOTEL_STEMS = ("Grand", "Royal", "Park", "Plaza", "Seaside", "Riverside", "Central", "Alpine", "Majestic",
               "Garden", "Comfort", "Best Western", "Holiday", "Ramada", "Ibis", "Crowne", "Marina", "Coral",
               "Sunrise", "Metropolitan", "Abades", "Citadines", "Kelva", "Heritage")
HOTEL_CHAINS = ("Marriott", "Hilton", "Best Western", "Accor", "IHG", "Wyndham", "Radisson",
                "Citadines Apart'hotel", "NH Hotels", "Meliá", "Barceló", "Ibis", "Travelodge", "OYO")
AMENITIES = ("Free WiFi", "Air conditioning", "Private Parking", "Swimming pool", "Fitness center",
             "Restaurant", "Bar", "Room service", "Spa", "Non-smoking rooms", "Airport shuttle",
             "Pets allowed", "24-hour front desk", "Laundry", "Concierge", "Elevator", "Business center",
             "Meeting rooms", "Family rooms", "Jacuzzi", "Garden", "Terrace", "Wifi gratuit",
             "Parking gratuit", "Salle de Sport", "Kostenloses Wifi", "Fahrstuhl", "Doctor On Call",
             "Tour Desk", "Currency Exchange", "Sauna")
BUSINESS_TYPES = ("Plumbing", "Locksmith", "Dental Care", "Auto Repair", "Storage", "Insurance", "Law Firm",
                  "Hair Salon", "Fitness", "Pet Grooming", "Roofing", "Pest Control", "Bail Bonds", "Realty",
                  "Air Conditioning", "Cleaning Services", "Physiotherapy", "Accounting", "Florist", "Tyres")
BUSINESS_SUFFIX = ("LLC", "Inc.", "Ltd", "& Sons", "Co.", "Services", "Group", "GmbH", "SARL", "Pty Ltd", "")
BRANDS = ("Nike", "Adidas", "Samsung", "Sony", "Philips", "Bosch", "Canon", "Lego", "NARS", "MAC",
          "Kat Von D", "Caran D'ache", "Martin Furniture", "Drive Medical", "JBL", "FLIR", "Makita", "Levi's",
          "Apple", "Logitech", "Dyson", "Ecco", "Tara Materials", "Katzkin", "Toyota", "Lenovo", "Garmin",
          "Weber", "Le Creuset", "Patagonia", "Innovative Products Unlimited", "Naladoo Home", "Everfavor",
          "DAFUN")
PRODUCT_NOUNS = ("Dog Leash", "Solar Panel", "Beanie", "Hoodie", "Coffee Maker", "Backpack", "Running Shoes",
                 "Office Chair", "Headphones", "Desk Lamp", "Yoga Mat", "Water Bottle", "Phone Case", "Watch",
                 "File Cabinet", "Bucket Seats", "Training Gloves", "Lipstick", "Paint Brush Set",
                 "Canvas Roll", "Motorcycle Battery", "Bluetooth Speaker", "Thermal Camera", "Leather Collar",
                 "Sofa", "Greeting Card", "Hot Sauce", "Wine", "Drill", "Cast Iron Skillet")
PRODUCT_ADJ = ("Premium", "Classic", "Pro", "Ultra", "Mini", "Deluxe", "Organic", "Wireless", "Heavy Duty",
               "Vintage", "Compact", "Eco", "Smart", "Leather", "Stainless Steel", "Kids", "Limited Edition")
PRODUCT_CATEGORIES = ("Home & Garden", "Electronics", "Clothing", "Beauty", "Sports & Outdoors", "Toys",
                      "Books", "Pet Supplies", "Automotive", "Office Products", "Jewelry", "Kitchen",
                      "Health", "Paint Making Materials", "Aquarium Hoods",
                      "Apparel & Accessories > Clothing", "Sharpeners", "Furniture", "Tools",
                      "Wine & Spirits")
EVENT_CATEGORIES = ("primary", "Music", "Workshop", "Conference", "Community", "Sports", "Family", "Arts",
                    "Webinar", "Festival")
RECIPE_CATEGORIES = ("Dessert", "Main Course", "Appetizer", "Breakfast", "Salad", "Soup", "Side Dish",
                     "Drinks", "Snack", "Dinner", "Baking")
MOVIE_GENRES = ("Drama", "Comedy", "Action", "Thriller", "Horror", "Romance", "Documentary", "Animation",
                "Sci-Fi", "Adventure", "Family", "Crime", "Fantasy")

BOOK_WORDS = ("Secret", "House", "River", "Garden", "Night", "Summer", "Shadow", "Daughter", "King",
              "Journey", "Silence", "Empire", "Winter", "Letters", "Island", "Memory", "Storm", "Light",
              "Stranger", "Promise", "Kingdom", "Mirror", "Ghost", "Heart", "Fire", "Wolf", "Queen", "City",
              "Road", "Sea")
BOOK_SUBTITLES = ("A Novel", "A Memoir", "Step-by-Step Exercises", "The Complete Guide", "Book 1",
                  "Revised Edition", "An American Family", "Stories", "5th Edition", "Illustrated Edition",
                  "Southern Reach Trilogy 3", "A History")
PUBLISHERS = ("Penguin Random House", "HarperCollins", "Simon & Schuster", "Macmillan", "Hachette",
              "Bloomsbury", "Wolters Kluwer", "L'HARMATTAN", "Gallimard", "Suhrkamp", "Image Comics",
              "DC Comics", "Oxford University Press", "Springer", "Packt Publishing", "Lonely Planet",
              "Bruylant", "Bold Strokes Books", "Arcadia Publishing")
COMPANIES_JOBS = ("Accenture", "Adecco", "Admiral Group", "Activision Blizzard", "Amazon", "Deloitte",
                  "Guardian Life Insurance Company", "BuzzFeed", "Better.com", "Randstad", "Manpower",
                  "Akron Children's Hospital", "AAA", "Ancestry", "Siemens", "Tata Consultancy Services")
JOB_TITLES = ("Senior Java Engineer", "Business Analyst", "Line Cook", "Housekeeping - Staff",
              "Data Scientist", "Graphic Designer", "Registered Nurse", "Journeyman Plumber",
              "Account Executive", "HR Administrator", "Warehouse Associate", "Project Manager",
              "Customer Service Representative", "Truck Driver", "Software Developer", "Marketing Manager",
              "Clinical Lead", "Sales Associate", "Teacher", "Mechanic", "Data Entry Operator", "Bookkeeper",
              "Welder", "Lagerhelfer (m/w/d)", "Chef de rang")
JOB_CATEGORIES = ("Office & Operations", "Human Resources", "Marketing and Communications",
                  "Finance and Accounting", "Programming/Software Engineering", "Production", "Healthcare",
                  "Logistik & Transport - Lagerlogistik", "Sales", "Customer Service", "Other", "Hospitality",
                  "Nursing Assistants 31-1014.00", "Registered Nurses 29-1141.00", "15-1132.00", "Mechanic")
CREDENTIALS = ("Bachelor's Degree", "High School", "High School Diploma/Equivalent", "Master's Degree",
               "Vocational Certificate", "Associate Degree", "Graduation", "Not Specified", "PhD",
               "Haupt / -Realschulabschluss", "BSc Degree in Computer Science", "CPA", "Diploma",
               "Bachelor's degree in accounting or finance required.")
EXPERIENCE = ("2 to 3 years experience.", "At least 1 year experience.", "1+ years recent experience",
              "3-5 years of relevant experience", "No experience required", "Minimum 5 years", "Entry level",
              "Class 1 driver's license", "Experience working with kids and adults.", "0", "12 months",
              "Previous experience of 1+yrs in loan processing", "Senior level (7+ years)")
WORK_HOURS = ("40 hours per week", "Full-time", "Part-time", "Mon - Fri: 9:00 to 18:00", "evenings, weekends",
              "evenings, weekends, and holidays", "37.5 hours per week", "Shift work", "8-9hr shifts/day",
              "Flexible hours", "UNAVAILABLE", "Vollzeit", "Temps plein", "20-25 hours")
SALARY_TEXT = ("Competitive", "Competitive Salary", "Pay depends on your level of experience and education.",
               "Paid in-line with the living wage.", "unavailable", "DOE", "Negotiable")

MOVIE_WORDS = ("Last", "Dark", "Lost", "Return", "Night", "Escape", "Rising", "Legacy", "Silent", "Wild",
               "Broken", "Hidden", "Red", "First", "Blood", "Dream", "Code", "Hunt", "Edge", "Zone", "Storm")
MOVIE_NOUNS = ("Dunkirk", "Mulberry Street", "Frontier", "Protocol", "Empire", "Horizon", "Roommate",
               "Highway", "Paradise", "Garden", "Mission", "Runner", "Sniper", "Brotherhood", "Voyage",
               "Storm")
SERIES = ("Rick and Morty", "The Good Doctor", "Narcos: Mexico", "Vikings", "Top Chef", "Cake Boss",
          "The O.C.", "Falling Skies", "Ink Master", "Good Witch", "All American", "Power", "Ballers",
          "The Witcher", "Star Wars Rebels", "The Barrier", "Puppy Dog Pals", "Outback Opal Hunters",
          "Brooklyn Nine-Nine")
EPISODE_WORDS = ("Pilot", "The Reckoning", "Homecoming", "Lost and Found", "Part One", "The Storm", "Finale",
                 "New Beginnings", "Trust", "Blood Ties", "The Long Night", "Reunion")
ALBUM_WORDS = ("Monolith", "Singles", "Home for the Holidays", "Chamber Music", "Acoustic Journeys",
               "Greatest Hits", "Live at the Fillmore", "Midnight Sessions", "EP", "Volume II", "Spotlight",
               "Sunday Morning Songs", "Deluxe Edition", "Unplugged", "Northern Lights")
SONG_WORDS = ("Stolen Dreams", "Suddenly Free", "Candle of Light", "Windows Down", "The Battle", "Believe",
              "Stand", "Southern Thread", "All Mixed Up", "Lost", "Here Comes The Sun", "Blinding Lights",
              "Tequila Sunrise", "Watershed", "Airwaves", "Say My Name", "Golden Hour", "Runaway", "Echoes")
BAND_WORDS = ("The Weeknd", "Giant Rooks", "Major Lazer", "Ilaiyaraaja", "Various Artists", "The Beatles",
              "Eagles", "Jimmy Buffett", "Arctic Monkeys", "Daft Punk", "Metallica", "Georgia",
              "Santhosh Narayanan", "Terence Blanchard", "John Debney", "Devi Sri Prasad", "Amit Trivedi")
MUSEUM_PATTERNS = ("{city} Museum of Art", "National Museum of {country}", "{city} History Museum",
                   "Museo Regional de {city}", "{city} Historical Society", "The {name} House Museum",
                   "Museum of Modern Art {city}", "{city} Science Center", "Kunsthaus {city}",
                   "{city} Children's Museum", "{name} Gallery", "Military Museum of {city}")
VENUE_PATTERNS = ("{city} Convention Center", "{city} Community Center", "{name} Stadium",
                  "{city} Public Library", "{name} Hall", "Online event", "{name} Theatre", "{city} Arena",
                  "{name} Park", "General Assembly {city}", "{name} University", "{city} Fire Department")
SPORTS_TEAMS = ("Norwich City", "Leicester City", "Arminia Bielefeld", "Bayer Leverkusen", "Union Berlin",
                "West Ham", "Portland Timbers", "Celtic", "Wolves", "FC Cincinnati", "Ludogorets", "Levante",
                "Lille", "Partizan", "Pittsburgh", "Cleveland", "Denver Broncos", "Kansas City Chiefs",
                "Chicago Bulls", "Athletic", "Ross County", "Real Betis", "Ajax", "Benfica", "Olympique Lyon")
TEAM_SUFFIX = ("", "", "", " U18", " U19", " (w)", " FC", " II")
SPORT_EVENT_WORDS = ("Marathon & Half Marathon", "Golf Tournament", "Grand Prix", "Fun Run", "Rallye",
                     "Cup Final", "Open", "Invitational", "Triathlon", "Championship")
WORK_TYPES = ("Photograph", "Painting", "Podcast", "Lecture", "Parish Council meeting", "Texture Pack",
              "Sermon", "Webinar Recording", "Report", "Poster")
RECIPE_MAINS = ("Chicken", "Salmon", "Pasta", "Sweet Potato", "Avocado", "Tofu", "Beef", "Pumpkin",
                "Chocolate", "Banana", "Quinoa", "Shrimp", "Lentil", "Apple", "Mushroom", "Cauliflower",
                "Peach")
RECIPE_STYLES = ("Easy", "Healthy", "Air Fryer", "One-Pot", "No Bake", "Vegan", "Crispy", "Slow Cooker",
                 "Homemade", "Spicy", "Low Carb", "Instant Pot", "Grandma's", "Gluten-Free")
RECIPE_DISHES = ("Tacos", "Curry", "Salad", "Soup", "Cookies", "Cheesecake", "Lasagna", "Smoothie", "Bread",
                 "Stir Fry", "Pancakes", "Skewers", "Casserole", "Muffins", "Burgers", "Pinwheels")
RECIPE_STEPS = ("Preheat oven to 350° F.", "In a large bowl, combine the flour, sugar and salt.",
                "Heat 1 tablespoon of oil over high heat.", "Stir in the garlic and cook for 1 minute.",
                "Bake for 25-30 minutes or until golden.", "Season with salt to taste.",
                "Cover and refrigerate for at least 30 minutes.", "Whisk together the eggs and milk.",
                "Add the chicken and cook until no longer pink.", "Serve warm with fresh herbs.",
                "Let cool on a wire rack before slicing.", "Blend until smooth.")
NUTRIENTS = ("protein", "fat", "saturated fat", "sugar", "carbohydrates", "fiber", "sodium", "cholesterol")

REVIEW_OPENERS = ("This book is exactly what I needed", "Loved every page of it",
                  "A bit slow in the middle, but", "Five stars!", "I was disappointed by",
                  "Great product, fast shipping.", "Highly recommend", "Not what I expected.",
                  "What happens when perfection isn't good enough?",
                  "Over the years the author has become renowned for", "Absolutely delicious,",
                  "My kids loved it.")
DESCRIPTION_OPENERS = {
    "Hotel": ("Located in the heart of {city}. ", "A charming {stars} star hotel in {city}. ",
              "Family hotel with pleasant tearooms. ", "Wilderness lodge near {city}. "),
    "Movie": ("After a mysterious accident, a family must flee. ",
              "At the height of the Cold War, a spy defects. ", "Two best friends take a road trip. ",
              "Movie was released on {date}, the IMDB rating is {score}. ", "A veteran returns home. "),
    "Book": ("A gripping novel. ", "First edition. ", "Since she was fourteen, she wanted to sing. ",
             "The definitive guide. ", "This interactive publication is created with FlippingBook. "),
    "Recipe": ("So good! ", "A simple weeknight recipe. ", "This is perfect for a cozy dinner. ",
               "Flavorful, colorful and delicious. "),
    "Product": ("Product Description ", "Constructed of premium materials. ", "Vibrant and durable. ",
                "Quality {noun} as fresh as it gets. "),
    "Event": ("Join us! ", "This 2-day course will equip you with the tools you need. ",
              "Exhibit Dates: {date}. ", "The annual conference is one of the most important gatherings. "),
    "JobPosting": ("Job Title: {job} ", "We are looking for a {job} to join our team. ",
                   "An exciting opportunity has arisen within {company}. ", "About the Role "),
}
