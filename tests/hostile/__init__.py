"""The hostile corpus for the hub: requests an attacker or a broken client may send, each with the exact
refusal it must get. ``corpus.cases()`` lists them (data in ``static.json``, generators in
``corpus.py``), ``corpus.Kit`` is the PKI they are built from, ``wire.exchange`` sends one over a raw
socket. ``der.py`` forges the certificates no library would write; ``vectors/`` holds fixed test
vectors (a P-192 public key)."""
