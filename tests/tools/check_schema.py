#!/usr/bin/env python3
"""Validates YAML files against a published JSON schema (an independent check of StackBox's output).

Usage: check_schema.py SCHEMA.json FILE.yml [FILE.yml ...]
Exits 1 and prints every violation when a file does not conform.
"""
import json
import sys
import warnings

import jsonschema
import yaml

warnings.simplefilter("ignore")  # unknown $schema URIs fall back to the latest draft


def main() -> int:
    schema_path, files = sys.argv[1], sys.argv[2:]
    with open(schema_path, encoding="utf-8") as handle:
        schema = json.load(handle)
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema)
    failed = False
    for path in files:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
        for error in validator.iter_errors(document):
            failed = True
            location = "/".join(str(part) for part in error.absolute_path)
            print(f"{path}: {location}: {error.message}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
