"""The Slack adapter: `/cruscible`, Block Kit posts and buttons, modals, App Home (slack-bolt)."""
