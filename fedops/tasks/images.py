"""Service images."""
from invoke import task

from .. import images
from . import clear_errors


@task(iterable=["service"], help={
    "service": "build only this service's image (repeatable); default: all",
    "no_cache": "rebuild from scratch, ignoring the build cache",
    "profile": "include a profile's services (e.g. gpu, tools)"})
@clear_errors
def build(c, service=None, no_cache=False, profile=None):
    """Build service images from the pinned Debian base (only what changed rebuilds)."""
    images.build(c, services=list(service or []) or None, profiles=[profile] if profile else [],
                 no_cache=no_cache)


@task
@clear_errors
def ls(c):
    """List the project's images and their sizes."""
    from .. import compose
    prefix = compose.settings().get("IMAGE_PREFIX", "flfed")
    c.run(f"docker image ls --format '{{{{.Repository}}}}:{{{{.Tag}}}}\\t{{{{.Size}}}}' '{prefix}/*'")
