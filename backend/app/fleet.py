"""The fleet seeded into an empty cars table."""

from __future__ import annotations

from typing import Any

SEED_CARS: tuple[dict[str, Any], ...] = (
    {"car_id": "car-001", "make": "Toyota", "model": "Yaris", "category": "economy", "seats": 5,
     "transmission": "manual", "daily_price_cents": 3900, "currency": "EUR"},
    {"car_id": "car-002", "make": "Volkswagen", "model": "Golf", "category": "compact", "seats": 5,
     "transmission": "manual", "daily_price_cents": 4900, "currency": "EUR"},
    {"car_id": "car-003", "make": "Skoda", "model": "Octavia Combi", "category": "estate", "seats": 5,
     "transmission": "automatic", "daily_price_cents": 5900, "currency": "EUR"},
    {"car_id": "car-004", "make": "Tesla", "model": "Model 3", "category": "electric", "seats": 5,
     "transmission": "automatic", "daily_price_cents": 8900, "currency": "EUR"},
    {"car_id": "car-005", "make": "Ford", "model": "Transit Custom", "category": "van", "seats": 9,
     "transmission": "manual", "daily_price_cents": 9900, "currency": "EUR"},
    {"car_id": "car-006", "make": "BMW", "model": "X3", "category": "suv", "seats": 5,
     "transmission": "automatic", "daily_price_cents": 10900, "currency": "EUR"},
)  # fmt: skip
