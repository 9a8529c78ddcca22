"""Control-plane services: control actions, questions, confirm-to-act, tokens, sweeping."""
