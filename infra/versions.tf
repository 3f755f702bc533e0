# Floodgate on AWS. The whole stack lives in this one root module (no child modules:
# the stack is one unit that is applied and destroyed together, and a flat module keeps every
# resource visible to infra/tests/test_terraform.py and to checkov).
#
# Provider: hashicorp/aws 6.x. 6.14 is the first release whose aws_db_proxy has
# `default_auth_scheme` (end-to-end IAM authentication, proxy.tf).

terraform {
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.14"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.7"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      Project = "floodgate"
      Stack   = var.name_prefix
    })
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

# The zones are named explicitly (var.availability_zones, default <region>a, <region>b, ...)
# so the subnet layout never shifts when AWS adds a zone to the region.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = local.az_names
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) >= var.az_count
      error_message = "Fewer than az_count of the requested availability zones are available; set availability_zones."
    }
  }
}
