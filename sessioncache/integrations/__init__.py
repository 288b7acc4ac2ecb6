"""Drop-in storage for bot frameworks: aiogram FSM storage and python-telegram-bot persistence."""
