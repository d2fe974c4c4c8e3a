"""Prints {agent: [case ids]} for fuzzingclient specs, as the suite itself resolves them (their
case patterns, exclusions and per-agent exclusions): the cases each report must hold. Runs with
the Autobahn virtualenv's Python 2.7: python cases.py SPEC.json..."""
import json
import sys

from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseSetname, CaseBasename
from autobahntestsuite.caseset import CaseSet

cases = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
expected = {}
for path in sys.argv[1:]:
    spec = json.load(open(path))
    ids = cases.parseSpecCases(spec)
    excluded = cases.parseExcludeAgentCases(spec)
    for server in spec["servers"]:
        expected[server["agent"]] = [i for i in ids if not cases.checkAgentCaseExclude(excluded, server["agent"], i)]
print(json.dumps(expected))
