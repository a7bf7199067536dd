"""imagine's web gallery and JSON API."""

from web.app import create_app, serve_gallery
from web.server import GalleryServer

__all__ = ["GalleryServer", "create_app", "serve_gallery"]
