"""The Discord adapter: slash commands, persistent buttons and embeds, on discord.py."""
