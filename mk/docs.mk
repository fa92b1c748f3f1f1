# The architecture schematic is generated from the customer inventory and kept in docs/.
.PHONY: docs-diagram
docs-diagram: setup ## regenerate the architecture diagram in docs/ from the customer inventory
	@command -v dot >/dev/null || apt-get install -y -qq --no-install-recommends graphviz >/dev/null
	python scripts/architecture_diagram.py inventories/customer-x docs/architecture
