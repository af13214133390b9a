"""``python -m seg_perception.runtime.config > config/seg.yaml``: print the parameter file."""

from seg_perception.runtime.config.params_file import params_yaml

if __name__ == "__main__":
    print(params_yaml(), end="")
