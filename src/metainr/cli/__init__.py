"""The ``metainr`` command line. Every verb imports torch and the library inside its function so
``metainr --help`` stays instant."""
