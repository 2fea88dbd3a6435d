"""Demand forecasters, online forecast-quality tracking and rolling-origin evaluation."""
