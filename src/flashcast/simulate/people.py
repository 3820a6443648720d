"""Small fixed vocabularies for the simulator (names are invented; addresses use example.com)."""

FIRST_NAMES = ("jane", "john", "maria", "li", "ahmed", "sofia", "noah", "emma", "lucas", "olivia",
               "mateo", "aisha", "yuki", "omar", "chloe", "ivan", "priya", "diego", "hana", "leo")
LAST_NAMES = ("doe", "smith", "garcia", "chen", "khan", "rossi", "muller", "silva", "kim", "novak",
              "haddad", "okafor", "tanaka", "dubois", "larsen", "costa", "patel", "nguyen", "weber", "lopez")
PAGES = ("/", "/collections/new", "/collections/sale", "/products/trail-runner", "/products/city-sneaker",
         "/products/wool-socks", "/products/rain-jacket", "/cart", "/checkout", "/account", "/search",
         "/blog/care-guide", "/help/shipping")
PRODUCTS = (
    ("SKU-1001", "Trail Runner", 129.0), ("SKU-1002", "City Sneaker", 89.0), ("SKU-1003", "Wool Socks", 14.0),
    ("SKU-1004", "Rain Jacket", 149.0), ("SKU-1005", "Canvas Tote", 29.0), ("SKU-1006", "Running Cap", 24.0),
    ("SKU-1007", "Insoles", 19.0), ("SKU-1008", "Hiking Boot", 179.0),
)
