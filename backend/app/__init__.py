"""The Car Rental backend API."""
