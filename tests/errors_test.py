"""Tests for ssm_icl.errors: the error types and the field checks."""

import enum

from absl.testing import absltest
from absl.testing import parameterized

from ssm_icl import errors


class _Color(enum.StrEnum):
  RED = "red"
  BLUE = "blue"


class ErrorsTest(parameterized.TestCase):

  def test_types(self):
    self.assertTrue(issubclass(errors.UserError, ValueError))
    self.assertTrue(issubclass(errors.UserTypeError, TypeError))
    self.assertTrue(issubclass(errors.UserTypeError, errors.UserError))

  @parameterized.named_parameters(
      ("int", errors.check_positive_int, "n", 0, errors.UserError,
       "n must be positive, got 0"),
      ("bool_is_not_int", errors.check_positive_int, "n", True,
       errors.UserTypeError, "n must be an int, got True"),
      ("number", errors.check_positive_number, "dt", -1.0, errors.UserError,
       "dt must be a positive number, got -1.0"),
      ("fraction", errors.check_fraction, "p", 1, errors.UserError,
       r"p must be a number in \[0, 1\), got 1"),
      ("bool", errors.check_bool, "flag", "yes", errors.UserTypeError,
       "flag must be a bool, got 'yes'"),
  )
  def test_checks_name_field_and_value(self, check, field, value, error,
                                       message):
    with self.assertRaisesRegex(error, message):
      check(field, value)

  def test_checks_accept_good_values(self):
    errors.check_positive_int("n", 3)
    errors.check_positive_number("dt", 1e-4)
    errors.check_fraction("p", 0.0)
    errors.check_bool("flag", False)

  def test_parse_enum(self):
    self.assertIs(errors.parse_enum("color", "red", _Color), _Color.RED)
    self.assertIs(errors.parse_enum("color", _Color.BLUE, _Color),
                  _Color.BLUE)
    with self.assertRaisesRegex(
        errors.UserError, r"Unknown color 'green'; expected one of "
        r"\['red', 'blue'\]"):
      errors.parse_enum("color", "green", _Color)
    with self.assertRaisesRegex(errors.UserError, "Unknown color None"):
      errors.parse_enum("color", None, _Color)


if __name__ == "__main__":
  absltest.main()
