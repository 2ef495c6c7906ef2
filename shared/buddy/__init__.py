"""Buddy Missions: long agent-style missions on serverless Google Cloud, with live progress."""
