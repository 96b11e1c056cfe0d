"""A small Django site on rankd sessions (``SESSION_ENGINE = "rankd_client.django"``): its
views, and its URLs (``ROOT_URLCONF`` names this module). Import it only once Django is set up.

Log in is ``django.contrib.auth.login``, log out ``logout``: the engine must work under them
unchanged. ``slow_cart`` loads the session, waits for the test's gate and then saves: the
request a logout races.
"""

from __future__ import annotations

import threading

from django.contrib.auth import login, logout
from django.contrib.auth.models import User
from django.http import HttpRequest, JsonResponse
from django.urls import path
from rankd_client.django import logout_everywhere

entered = threading.Event()
release = threading.Event()


def _state(request: HttpRequest) -> JsonResponse:
    name = request.user.get_username() if request.user.is_authenticated else None
    return JsonResponse({"user": name, "cart": request.session.get("cart", [])})


def do_login(request: HttpRequest) -> JsonResponse:
    user, _ = User.objects.get_or_create(username=request.GET["user"])
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return _state(request)


def me(request: HttpRequest) -> JsonResponse:
    return _state(request)


def add(request: HttpRequest, item: str) -> JsonResponse:
    request.session["cart"] = [*request.session.get("cart", []), item]
    return _state(request)


def short(request: HttpRequest) -> JsonResponse:
    request.session.set_expiry(1)  # seconds idle
    return _state(request)


def do_logout(request: HttpRequest) -> JsonResponse:
    logout(request)
    return _state(request)


def do_logout_everywhere(request: HttpRequest) -> JsonResponse:
    pk = request.user.pk
    assert pk is not None, "log in first"
    revoked = logout_everywhere(pk)
    logout(request)
    return JsonResponse({"revoked": revoked["revoked"]})


def slow_cart(request: HttpRequest, item: str) -> JsonResponse:
    cart = request.session.get("cart", [])  # loaded now
    entered.set()
    release.wait(10)
    request.session["cart"] = [*cart, item]
    return JsonResponse({"cart": request.session["cart"]})


urlpatterns = [
    path("login", do_login),
    path("me", me),
    path("cart/<str:item>", add),
    path("short", short),
    path("logout", do_logout),
    path("logout-everywhere", do_logout_everywhere),
    path("slow-cart/<str:item>", slow_cart),
]
