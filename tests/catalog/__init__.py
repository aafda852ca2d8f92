"""Grader validity for the catalog challenges added after the first five."""
