"""imagine's Discord frontend: slash commands, persistent buttons, delivery of results."""

from bot.client import ImagineBot
from bot.delivery import Delivery, Target
from bot.runtime import Runtime
from bot.views import ResultButton

__all__ = ["Delivery", "ImagineBot", "ResultButton", "Runtime", "Target"]
