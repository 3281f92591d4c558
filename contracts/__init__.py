"""The wire contract every part imports: what a scoring request, a result and a job are (docs/contracts.md).

Pure pydantic: importing it loads nothing of the services, the judge, the trainer or torch.

- :mod:`contracts.values` — finite numbers, valid Unicode, any JSON value; how a reward value goes on the wire;
- :mod:`contracts.channels` — reward sources and channel names (``rubric/NN``, the rule channels);
- :mod:`contracts.messages` — chat messages, rubric criteria, the judge's prompt rule;
- :mod:`contracts.tools` — what a valid tool doc is (read into the form the BFCL checker uses);
- :mod:`contracts.rules` / :mod:`contracts.judge` — the rules and judge services' requests and answers;
- :mod:`contracts.gateway` — the gateway's item (the strictest rule of every service), job view, dense rewards;
- :mod:`contracts.results` — result records, ``null_result``, job statuses (which are final) and their rules.
"""
