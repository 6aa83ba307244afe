"""Each HTTP function's module-level app pointed at this module's catalog database, as its
Lambda handler would run it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import functions.admin.app as admin_function
import functions.home.app as home_function
import functions.purchase.app as purchase_function
import functions.search.app as search_function
import functions.store.app as store_function
from edgemart.services import Services
from tests.conftest import settings_for
from tests.contract.lambda_harness import installed_services
from tests.support.tokens import SECRET


@pytest.fixture
def home_services(catalog_database_url: str) -> Iterator[Services]:
    with installed_services(home_function.app, settings_for(catalog_database_url)) as services:
        yield services


@pytest.fixture
def search_services(catalog_database_url: str) -> Iterator[Services]:
    settings = settings_for(catalog_database_url, cursor_secret="s")
    with installed_services(search_function.app, settings) as services:
        yield services


@pytest.fixture
def store_services(catalog_database_url: str) -> Iterator[Services]:
    settings = settings_for(catalog_database_url, cursor_secret="s", jwt_secret=SECRET)
    with installed_services(store_function.app, settings) as services:
        yield services


@pytest.fixture
def purchase_services(catalog_database_url: str) -> Iterator[Services]:
    settings = settings_for(catalog_database_url, jwt_secret=SECRET)
    with installed_services(purchase_function.app, settings) as services:
        yield services


@pytest.fixture
def admin_services(catalog_database_url: str) -> Iterator[Services]:
    settings = settings_for(catalog_database_url, jwt_secret=SECRET)
    with installed_services(admin_function.app, settings) as services:
        yield services
