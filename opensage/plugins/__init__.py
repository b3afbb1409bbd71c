"""The pack's own plugins, registered like any third-party plugin (see ``opensage.host.DEFAULT_PLUGINS``)."""
