namespace Faultline.Cli.Tests;
