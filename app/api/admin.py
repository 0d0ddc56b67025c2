"""Administration under /admin (key management, model lifecycle); filled by later work."""
from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")
